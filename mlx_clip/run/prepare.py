"""A run's data and model, checked before any long work: `prepare` checks the settings, runs the
data step (data/training_set.py: manifest, images, captions, groups, split) and loads the model;
every input error surfaces here, before training starts."""

from __future__ import annotations

import math
import socket
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from ..settings import FinetuneConfig
from ..data.caption_check import CaptionCheck, check_captions
from ..data.captions import value_text
from ..data.dataset import split_sizes
from ..data.records import get_field_or_none
from ..data.stream import TrainStream
from ..data.source import resolve_manifest
from ..data.training_set import TrainingSet, build_training_set
from ..errors import InputError
from ..models.clip import CLIP, load
from ..models.lora import ALL_LOCKED
from ..models.model import set_grad_checkpoint
from ..models.weights import resolve_model_folder
from ..train.distributed import Dist
from ..train.wise_ft import check_alphas
from ..train.evaluate import EvalSet
from ..train.step import LockConfig, apply_locks


@dataclass(kw_only=True)
class Prepared(TrainingSet):
    """A run's data (TrainingSet) and model, ready to train."""

    model: CLIP
    caption_check: CaptionCheck | None = None  # runs/NAME/captions.json

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_index) / self.config.batch_size)

    def label(self, i: int) -> str | None:
        """Record i's --label-field value as text (None without a label field or value)."""
        field_name = self.config.label_field
        return (value_text(get_field_or_none(self.items[i].record, field_name)) or None) if field_name else None

    def label_counts(self, index: list[int] | None = None) -> Counter:
        """How many records (all, or those at `index`) carry each label; "(missing)" counts the rest."""
        return Counter(self.label(i) or "(missing)" for i in (range(len(self.items)) if index is None else index))

    def eval_set(self, index: list[int] | None = None) -> EvalSet:
        """The validation set, or the records at `index` (the test set)."""
        index = self.val_index if index is None else index
        return EvalSet(
            image_paths=[str(self.items[i].image_path) for i in index],
            captions=[self.captions.first(i) for i in index],
            labels=[self.label(i) for i in index],
            groups=self.group_of(index),
        )

    def locks(self) -> LockConfig:
        """Which towers train (the config tree's `locks`)."""
        return self.config.locks

    def ready_to_train(self, model: CLIP | None = None) -> None:
        """Locks, LoRA adapters and gradient checkpointing as the config asks, on `model` (default:
        the prepared one); before the Trainer is made, which takes what is trainable then."""
        model = self.model if model is None else model
        apply_locks(model, self.config.locks, self.config.lora, self.config.sample.seed)
        set_grad_checkpoint(model, self.config.grad_checkpoint)

    def train_stream(self) -> TrainStream:
        size = self.model.config.vision.image_size
        return TrainStream([self.items[i] for i in self.train_index], self.captions, self.model.tokenizer,
                           self.model.image_processor, size, self.config.batch_size, self.config.sample.seed,
                           self.config.augment, threads=self.config.threads, caption_index=self.train_index,
                           groups=self.group_of(self.train_index))


def check_lora(config: FinetuneConfig) -> None:
    """--lora's settings, and that some block is left to adapt (said before any download)."""
    config.lora.check()
    locks = config.locks
    if config.lora.rank and locks.lock_image and locks.lock_text and not locks.unlock_last:
        raise InputError(ALL_LOCKED)


class RankFailed(InputError):
    """Another rank failed while fetching: this one stops too. `quiet` on all but rank 0, which
    prints the one line naming the rank that failed."""

    def __init__(self, message: str, quiet: bool):
        super().__init__(message)
        self.quiet = quiet


def manifest_once_per_host(config: FinetuneConfig, say: Callable[[str], None], before_fetch: Callable[[], None],
                           dist: Dist | None) -> Path:
    """resolve_manifest, run under mlx.launch by one process per machine: each host's first rank
    (by hostname) fetches and prepares the data while the others wait at a collective and read the
    manifest it wrote (two fetches into one folder collide on its lock). A failure on any rank
    reaches every rank through the same collective, so all of them stop with a non-zero exit."""
    if dist is None or not dist.active:
        return resolve_manifest(config, say, before_fetch)
    hosts = dist.gather_json(socket.gethostname())
    fetcher = hosts.index(hosts[dist.rank])
    manifest, failure, error = None, None, None
    if fetcher == dist.rank:
        try:
            manifest = str(resolve_manifest(config, say, before_fetch))
        except Exception as err:  # noqa: BLE001  (told to every rank first, then raised as it is)
            error, failure = err, (str(err).splitlines() or [type(err).__name__])[0]
    shared = dist.gather_json({"manifest": manifest, "error": failure})
    failed = [(rank, found["error"]) for rank, found in enumerate(shared) if found["error"]]
    if failed:
        if error is not None and not isinstance(error, InputError):
            raise error
        rank, message = failed[0]
        raise RankFailed(f"rank {rank}: {message}", quiet=not dist.is_main)
    return Path(shared[fetcher]["manifest"])


def check_settings(config: FinetuneConfig) -> None:
    """The settings that need no data, before any work."""
    if config.precision not in ("float32", "bfloat16"):
        raise InputError(f"--precision must be float32 or bfloat16, got {config.precision!r}")
    if config.batch_size < 1 or config.epochs < 0:
        raise InputError("--batch-size must be >= 1 and --epochs >= 0")
    if not 0 < config.augment.crop_min_area <= 1:
        raise InputError(f"--crop-min-area must be in (0, 1], got {config.augment.crop_min_area}")
    if config.threads < 1:
        raise InputError(f"--threads must be >= 1, got {config.threads}")
    split_sizes(0, config.val_fraction, config.test_fraction or 0.0)  # the fractions, before any work
    check_lora(config)
    check_alphas(config.wise_ft, config.wise_ft_pick, config.retention_images)


def prepare(config: FinetuneConfig, say: Callable[[str], None] = print, model: CLIP | None = None,
            dist: Dist | None = None) -> Prepared:
    """Settings -> the data step -> the model; all input errors surface here."""
    check_settings(config)
    found: list[Path] = []

    def find_model() -> None:
        """Before any fetch: a --model typo, or a hub id with no network, is said before hours of downloads."""
        if model is None:
            found.append(resolve_model_folder(config.model))

    data = build_training_set(config, say, find_model,
                              find_manifest=lambda c, s, b: manifest_once_per_host(c, s, b, dist))
    if model is None:
        model = load(found[0] if found else config.model, dtype="float32")
    tokenizer = model.tokenizer  # a model without tokenizer files fails here, clearly
    check = check_captions(data.captions, data.groups.image_keys, tokenizer.count_tokens, tokenizer.context_length)
    for line in check.lines():
        say(line)
    return Prepared(**{f.name: getattr(data, f.name) for f in fields(TrainingSet)}, model=model, caption_check=check)
