"""A run's data and model, checked before any long work: `prepare` checks the settings, runs the
data step (data/training_set.py: manifest, images, captions, groups, split) and loads the model;
every input error surfaces here, before training starts."""

from __future__ import annotations

import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from ..settings import FinetuneConfig
from ..data.caption_check import CaptionCheck, check_captions
from ..data.source import resolve_manifest
from ..data.training_set import TrainingSet, build_training_set
from ..errors import InputError
from ..models.clip import CLIP, load
from ..models.trainable import make_trainable
from ..models.weights import resolve_model_folder
from ..train.distributed import Dist


@dataclass(kw_only=True)
class Prepared(TrainingSet):
    """A run's data (TrainingSet) and model, ready to train."""

    model: CLIP
    caption_check: CaptionCheck | None = None  # runs/NAME/captions.json

    def ready_to_train(self, model: CLIP) -> None:
        """Locks, LoRA adapters and gradient checkpointing as the config asks, on `model`
        (prepare() has applied them to its own; curve.py applies them again to each subset's start)."""
        make_trainable(model, self.config.locks, self.config.lora, self.config.sample.seed, self.config.grad_checkpoint)


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


def prepare(config: FinetuneConfig, say: Callable[[str], None] = print, model: CLIP | None = None,
            dist: Dist | None = None) -> Prepared:
    """Settings -> the data step -> the model, ready to train; all input errors surface here."""
    config.check()
    if dist is not None:
        dist.check_batch_size(config.batch_size)  # the global batch splits over the processes
    found: list[Path] = []  # the model's folder, when resolved before a fetch
    data = build_training_set(
        config, say,  # before a fetch: a --model typo, or a hub id with no network, is said before hours of downloads
        before_fetch=(lambda: found.append(resolve_model_folder(config.model))) if model is None else (lambda: None),
        find_manifest=lambda c, s, b: manifest_once_per_host(c, s, b, dist))
    if model is None:
        model = load(found[0] if found else config.model, dtype="float32")
    # locks, adapters, checkpointing: before any Trainer is made (it trains what is trainable then)
    make_trainable(model, config.locks, config.lora, config.sample.seed, config.grad_checkpoint)
    tokenizer = model.tokenizer  # a model without tokenizer files fails here, clearly
    check = check_captions(data.captions, data.groups.image_keys, tokenizer.count_tokens, tokenizer.context_length)
    for line in check.lines():
        say(line)
    return Prepared(**{f.name: getattr(data, f.name) for f in fields(TrainingSet)}, model=model, caption_check=check)
