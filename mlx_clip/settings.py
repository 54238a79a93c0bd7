"""The one typed config tree of a run: what the CLI is generated from, what `--config FILE` reads
and what runs/NAME/config.json holds (so `finetune.py --config runs/NAME/config.json` repeats a run).

    FinetuneConfig: model, runs_dir, name, data | manifest, captions ... threads
      sample:  SampleConfig  (which records: sample | margin, stratify, seed)
      fetch:   FetchConfig   (reading the records and downloading their images; data/fetcher.py)
      optim:   OptimConfig   (train/optim.py)
      locks:   LockConfig    (models/trainable.py)
      lora:    LoraConfig    (models/lora.py)
      augment: AugmentConfig (data/stream.py)

Every part is a frozen dataclass: a run resolves its settings with `dataclasses.replace`, so no
step changes what another step (or the saved config.json) already read.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .flags import (add_config_arguments, apply, flag_of, from_dict, given, leaf_fields, margin_text,
                    positive_int, setting, to_dict)
from .data.fetch_config import RECORDS_GROUP, FetchConfig
from .data.stream import AugmentConfig
from .errors import InputError
from .io import read_small_text
from .data.dataset import split_sizes
from .models.config import dtype_key
from .models.lora import ALL_LOCKED, LoraConfig
from .models.trainable import LockConfig
from .train.optim import OptimConfig
from .train.retention import DEFAULT_SIZE as RETENTION_SIZE
from .train.wise_ft import PICK_RULES, alpha_list, check_alphas

DEFAULT_LABEL_PROMPT = "a photo of {label}"


def _prompts(given_prompts: list[str]) -> str | list[str]:
    """One --label-prompt: that prompt (as before); several: the ensemble."""
    return given_prompts[0] if len(given_prompts) == 1 else given_prompts


@dataclass(frozen=True)
class SampleConfig:
    """Which records a run (or fetch.py) draws: all, a random sample, or one sized by a margin of error."""

    sample: int | None = setting(None, "use a random sample of N records (default: every record)",
                                 type=positive_int, metavar="N", exclusive="size")
    margin: str | float | None = setting(
        None, "find the sample size for margin of error E (e.g. 0.025) with n = ceil(N / (1 + N E^2)), "
        "and print how", type=margin_text, metavar="E", exclusive="size")
    stratify: str | None = setting(
        None, "draw the sample (and finetune's split) in proportion to this field's values (each value keeps "
        "its share, every value gets at least one record); records without it form '(missing)'", metavar="FIELD")
    seed: int = setting(0, "random seed: the same seed and records give the same sample (and in finetune the "
                           "same split, initial order and augmentations)")

    @property
    def draws(self) -> bool:
        """True when a subset is asked for (--sample or --margin), not every record."""
        return self.sample is not None or self.margin is not None


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a run depends on; written to runs/NAME/config.json."""

    model: str = setting("openai/clip-vit-base-patch32", "model to start from: HF repo id, HF folder or MLX folder")
    runs_dir: str = setting("runs", "folder that holds one subfolder per run")
    name: str | None = setting(None, "run name (folder under --runs-dir); default: the start time")
    data: str = setting("data/records.json", "metadata file (JSON, JSONL or CSV) or folder; its sample is "
                        "fetched before training", metavar="RECORDS", exclusive="source")
    manifest: str | None = setting(None, "manifest.jsonl from fetch.py (images already fetched)", metavar="PATH",
                                   exclusive="source")
    sample: SampleConfig = setting(default_factory=SampleConfig, help=RECORDS_GROUP)
    fetch: FetchConfig = setting(default_factory=FetchConfig, help="downloads")
    captions: list[str] = setting(
        default_factory=list, help='caption template with {field} or {dotted.field} paths, e.g. "{object_type} '
        'from the {period}"; repeat for several, drawn at random per image and epoch; default: built from the '
        "record's title, category and keyword fields", flag="--caption", action="append", metavar="TEMPLATE",
        group="captions and evaluation")
    val_fraction: float = setting(0.1, "fraction of records held out for validation (deterministic for a seed)",
                                  group="captions and evaluation")
    test_fraction: float | None = setting(
        None, "fraction of distinct images held out as the test set that gives the before/after figures (never "
        "trained on, never used to pick the epoch); default 0.1 when that is at least 20 images, else none",
        group="captions and evaluation")  # None: resolved in prepare
    label_field: str | None = setting(None, "record field whose values are classes for zero-shot accuracy",
                                      group="captions and evaluation")
    group_field: str | None = setting(
        None, "record field naming the object a photo shows (e.g. object_uri): records sharing its value stay on "
        "one side of the split, are positives for each other in the loss, and are the hits of image-to-image "
        "recall; records sharing an image are grouped either way", metavar="FIELD", group="captions and evaluation")
    label_prompt: str | list[str] = setting(
        DEFAULT_LABEL_PROMPT, "prompt for zero-shot classes, {label} is replaced; repeat for a prompt ensemble: "
        "each class's prompt embeddings averaged, as CLIP does", action="append", metavar="PROMPT",
        from_cli=_prompts, group="captions and evaluation")
    retention_images: int = setting(
        RETENTION_SIZE, "score what fine-tuning forgets on this many bundled emoji (image -> name, category), "
        "base against fine-tuned; 0: skip", metavar="N", group="captions and evaluation")
    wise_ft: list[float] = setting(
        default_factory=list, help="WiSE-FT: mix base and fine-tuned weights at these a (comma-separated, e.g. "
        "0,0.25,0.5,0.75,1, which 'default' also names), score each on validation, export the one "
        "--wise-ft-pick keeps; off unless given", type=alpha_list, metavar="ALPHAS", group="captions and evaluation")
    wise_ft_pick: str = setting(
        "gain", "which mix --wise-ft keeps: gain (best validation mean recall@1) or balanced (the best of those "
        "keeping at least 95 percent retention)", choices=list(PICK_RULES), group="captions and evaluation")
    batch_size: int = setting(32, "images per step (contrastive batch)", group="training")
    epochs: int = setting(5, "passes over the training split", group="training")
    optim: OptimConfig = setting(default_factory=OptimConfig, help="training")
    locks: LockConfig = setting(default_factory=LockConfig, help="training")
    lora: LoraConfig = setting(default_factory=LoraConfig, help="training")
    grad_checkpoint: bool = setting(False, "recompute each transformer block in the backward pass instead of "
                                    "keeping its activations: less memory, more time per step", group="training")
    precision: str = setting("float32", "compute precision (bf16 also works); bfloat16 keeps float32 master weights "
                             "(Apple GPUs; slow on CPUs)", type=dtype_key, choices=["float32", "bfloat16"],
                             group="training")
    threads: int = setting(4, "image loading threads", group="training")
    augment: AugmentConfig = setting(default_factory=AugmentConfig, help="augmentation")

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "FinetuneConfig":
        """The tree from a nested dict (a --config file, a run's config.json) or from the flat
        config.json of runs made before the tree; a run's `resolved` facts are skipped."""
        data = {k: v for k, v in data.items() if k != "resolved"} if isinstance(data, dict) else data
        if is_legacy(data):
            data = nest_legacy(data)
        return from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """The nested JSON-ready dict that runs/NAME/config.json holds."""
        return to_dict(self)

    def check(self) -> None:
        """The settings that need no data, each refused in one line before any work."""
        if self.precision not in ("float32", "bfloat16"):
            raise InputError(f"--precision must be float32 or bfloat16, got {self.precision!r}")
        if self.batch_size < 1 or self.epochs < 0:
            raise InputError("--batch-size must be >= 1 and --epochs >= 0")
        if not 0 < self.augment.crop_min_area <= 1:
            raise InputError(f"--crop-min-area must be in (0, 1], got {self.augment.crop_min_area}")
        if self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        check_alphas(self.wise_ft, self.wise_ft_pick, self.retention_images)
        split_sizes(0, self.val_fraction, self.test_fraction or 0.0)  # the fractions, before any work
        self.lora.check()
        locks = self.locks  # --lora needs some block left to adapt (said before any download)
        if self.lora.rank and locks.lock_image and locks.lock_text and not locks.unlock_last:
            raise InputError(ALL_LOCKED)

    def __post_init__(self) -> None:
        # `precision: bf16` in a settings file means what --precision bf16 does (and is saved as bfloat16)
        object.__setattr__(self, "precision", dtype_key(self.precision))

    def steps_per_epoch(self, train_records: int) -> int:
        """Optimizer steps of one epoch over `train_records` (the last batch may be short)."""
        return math.ceil(train_records / self.batch_size)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run (at least 1, for the schedule)."""
        return max(1, steps_per_epoch * self.epochs)


# The flat keys of config.json files written before the tree, and where each lives now.
LEGACY_KEYS = {
    "lr": "optim.lr", "warmup": "optim.warmup", "weight_decay": "optim.weight_decay",
    "lock_image": "locks.lock_image", "lock_text": "locks.lock_text", "unlock_last": "locks.unlock_last",
    "hflip": "augment.hflip", "vflip": "augment.vflip", "rotate": "augment.rotate",
    "color_jitter": "augment.color_jitter", "crop_min_area": "augment.crop_min_area",
    "seed": "sample.seed", "stratify": "sample.stratify", "id_field": "fetch.id_field",
}
LEGACY_FETCH_KEYS = {"sample": "sample.sample", "margin": "sample.margin"}  # the old `fetch` dict's sample keys


def is_legacy(data: Any) -> bool:
    """A flat config.json (runs before the tree): a moved key at the top or sample keys in `fetch`."""
    return isinstance(data, dict) and (any(k in data for k in LEGACY_KEYS) or (
        isinstance(data.get("fetch"), dict) and any(k in data["fetch"] for k in LEGACY_FETCH_KEYS)))


def nest_legacy(data: dict) -> dict:
    """A flat config dict as the tree's nested one (unknown keys skipped, as the flat reader did);
    a run from before test sets keeps none."""
    moved = {LEGACY_KEYS.get(k, k): v for k, v in data.items() if k != "fetch"}
    fetch = dict(data.get("fetch") or {})
    moved.update({LEGACY_FETCH_KEYS[k]: fetch.pop(k) for k in list(fetch) if k in LEGACY_FETCH_KEYS})
    moved.update({f"fetch.{k}": v for k, v in fetch.items()})
    if "val_fraction" in data and "test_fraction" not in data:
        moved["test_fraction"] = 0.0
    nested: dict[str, Any] = {}
    known = leaf_fields(FinetuneConfig)
    for path, value in moved.items():
        if path not in known:  # as before the tree: a key of an older version is skipped
            continue
        head, _, rest = path.partition(".")
        if rest and value is not None:
            nested.setdefault(head, {})[rest] = value
        elif not rest:
            nested[head] = value
    return nested


def load_config(path: str | Path) -> FinetuneConfig:
    """A --config file: JSON, or YAML for a .yaml/.yml name (PyYAML comes with huggingface_hub)."""
    path = Path(path)
    try:
        text = read_small_text(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # only for YAML files: most runs never need it

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InputError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON: {err}") from None
    return FinetuneConfig.from_dict(data if data is not None else {}, str(path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and every setting of the tree, for finetune.py and curve.py."""
    parser.add_argument("--config", metavar="FILE",
                        help="read the settings from a JSON or YAML file (e.g. a run's config.json, to repeat "
                             "it); flags given as well override it")
    add_config_arguments(parser, FinetuneConfig)


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The --config file (or the defaults) with the flags given on the command line laid over it."""
    base = load_config(args.config) if getattr(args, "config", None) else FinetuneConfig()
    return apply(base, given(args, FinetuneConfig))


def ignored_on_resume(given_config: FinetuneConfig, saved: FinetuneConfig) -> list[str]:
    """The flags (as `--flag value`) a resumed run ignores: set away from the default and from the
    saved run's value. Where the run's files and records come from is not a setting to compare."""
    defaults, ignored = FinetuneConfig(), []
    for path in leaf_fields(FinetuneConfig):
        if (path in ("runs_dir", "name", "data", "manifest", "sample.sample", "sample.margin")
                or (path.startswith("fetch.") and path != "fetch.id_field")):
            continue
        value = _get(given_config, path)
        if value != _get(defaults, path) and value != _get(saved, path):
            flag = flag_of(FinetuneConfig, path)
            ignored.append(flag if isinstance(value, bool) else f"{flag} {value}")  # a switch: as typed
    return ignored


def _get(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


__all__ = ["FinetuneConfig", "SampleConfig", "FetchConfig", "AugmentConfig", "OptimConfig", "LockConfig", "LoraConfig",
           "load_config", "add_arguments", "config_from_args", "ignored_on_resume"]
