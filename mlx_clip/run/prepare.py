"""A run's data and model, checked before any long work: `prepare` reads the manifest (fetching
the sample first when given a records file), checks images, builds captions and the split, and
loads the model; every input error surfaces here, before training starts."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..config import FinetuneConfig
from ..data.captions import CaptionBuilder, value_text
from ..data.records import Records, get_field_or_none, load_records
from ..data.dataset import Item, check_images, is_manifest, read_manifest, split, split_sizes
from ..data.imagefolder import FILE_COLUMN, metadata_file, write_metadata
from ..data.stream import TrainStream
from ..errors import InputError
from ..models.clip import CLIP, load
from ..models.lora import ALL_LOCKED
from ..models.model import set_grad_checkpoint
from ..models.weights import resolve_model_folder
from ..train.evaluate import EvalSet
from ..train.step import LockConfig, apply_locks

AUTO_TEST_FRACTION = 0.1  # --test-fraction's default ...
MIN_AUTO_TEST = 20  # ... when it holds at least this many images; else no test set unless asked

@dataclass
class Prepared:
    """A run's data and model, ready to train."""

    config: FinetuneConfig
    manifest: Path
    items: list[Item]
    skipped_line: str | None
    captions: CaptionBuilder
    train_index: list[int]
    val_index: list[int]
    model: CLIP
    test_index: list[int] = field(default_factory=list)
    split_line: str = ""  # how many records share an image
    split_ids: dict = field(default_factory=dict)  # split.json
    dropped_empty: int = 0  # records whose caption rendered empty

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
                           self.config.augment, threads=self.config.threads, caption_index=self.train_index)


# --- the manifest ----------------------------------------------------------------------------------------

BUNDLED_RECORDS = Path(__file__).resolve().parents[1] / "demo" / "emoji" / "records.jsonl"  # see its README.md
BUNDLED_CAPTION = "{name}, an emoji of {subcategory}"
BUNDLED_LABEL_FIELD = "category"


def fetch_manifest(config: FinetuneConfig, say: Callable[[str], None] = print,
                   records: Records | None = None) -> Path:
    """Draw and fetch the sample of `config.data` (as fetch.py does); returns its manifest.jsonl.
    `records`: config.data as check_before_fetch read it, so a large file is parsed once."""
    from ..data.fetcher import fetch_records

    say(f"fetching images for {config.data} into {config.fetch.out}")
    summary = fetch_records(config.data, config.fetch, sample=config.sample.sample, margin=config.sample.margin,
                            stratify=config.sample.stratify, seed=config.sample.seed, log=say, loaded=records)
    say(str(summary))
    metadata = write_metadata(summary.manifest_path)  # as fetch.py does; only worth a line when it lists images
    if metadata.rows:
        say(str(metadata))
    return Path(summary.manifest_path)


def use_bundled_data(config: FinetuneConfig, say: Callable[[str], None] = print) -> None:
    """With no data/records.json and neither --data nor --manifest, train on the emoji set that
    ships inside the package (with captions and labels that suit it), so a fresh clone's first
    command runs instead of stopping at a missing file."""
    if config.manifest or config.data != FinetuneConfig.data or Path(config.data).exists():
        return
    config.data = str(BUNDLED_RECORDS)
    config.fetch = replace(config.fetch, path_field="image_path", url_field=None)
    config.captions = config.captions or [BUNDLED_CAPTION]
    config.label_field = config.label_field or BUNDLED_LABEL_FIELD
    say(f"no {FinetuneConfig.data}: training on the emoji set bundled with mlx_clip ({BUNDLED_RECORDS.parent}); "
        "for your own records pass --data RECORDS (JSON, JSONL, CSV or an ImageFolder)")


def resolve_manifest(config: FinetuneConfig, say: Callable[[str], None] = print,
                     before_fetch: Callable[[], None] = lambda: None) -> Path:
    """The manifest to train on: given, found in a folder, or fetched from the records.
    `before_fetch` runs once the records have passed their checks and just before fetching
    (prepare finds the model there, so a --model typo is said before hours of downloads)."""
    use_bundled_data(config, say)
    if config.manifest:
        if config.sample.draws:
            raise InputError(f"{config.manifest}: --sample/--margin draw from --data; to train on a sample of a "
                             "manifest pass it as --data with --path-field image_path and another --out")
        return Path(config.manifest)
    data = Path(config.data)
    if data.is_dir():
        return _folder_manifest(config, data, say, before_fetch)
    if not data.is_file():
        raise InputError(f"{data}: records file not found (pass --data RECORDS or --manifest MANIFEST)")
    sampling = config.sample.draws or config.fetch.path_field
    if is_manifest(data) and not sampling:
        return data  # fetch.py's output given as --data: use it as it is
    records = check_before_fetch(config)
    before_fetch()
    return fetch_manifest(config, say, records)


def check_before_fetch(config: FinetuneConfig) -> Records:
    """What the records alone can show wrong (templates, label field, batch size against the
    sample's training split), before minutes to hours of downloads; returns the records read,
    for the fetch."""
    from ..data.sampling import choose_sample

    records = load_records(config.data, config.fetch.encoding)
    try:
        indices, _ = choose_sample(records.records, config.sample.sample, config.sample.margin,
                                   config.sample.stratify, config.sample.seed)
    except ValueError as err:
        raise InputError(f"{records.path}: {err}") from None
    sample = [records.records[i] for i in indices]
    CaptionBuilder(config.captions, sample)  # a template naming a field no record has
    _check_label_field(config, sample)
    _check_batch_size(config, split_sizes(len(sample), config.val_fraction, _test_fraction(config, len(sample)))[0],
                      f"the sample's training split (of {len(sample)} records, before any image fails)")
    return records


def _test_fraction(config: FinetuneConfig, n: int) -> float:
    """--test-fraction as given, else AUTO_TEST_FRACTION when that gives MIN_AUTO_TEST images or more."""
    if config.test_fraction is not None:
        return config.test_fraction
    return AUTO_TEST_FRACTION if round(n * AUTO_TEST_FRACTION) >= MIN_AUTO_TEST else 0.0


def _check_label_field(config: FinetuneConfig, records: list[dict]) -> None:
    if config.label_field and not any(get_field_or_none(r, config.label_field) not in (None, "") for r in records):
        raise InputError(f"--label-field {config.label_field!r}: no record has this field")


def _check_batch_size(config: FinetuneConfig, train_size: int, what: str) -> None:
    if config.batch_size > train_size:
        raise InputError(f"--batch-size {config.batch_size} is larger than {what} ({train_size} records); "
                         f"use --batch-size {max(1, train_size)} or less")


def _folder_manifest(config: FinetuneConfig, folder: Path, say: Callable[[str], None],
                     before_fetch: Callable[[], None]) -> Path:
    """--data DIR: a folder fetch.py wrote (its manifest.jsonl, or a sample drawn from it), or an
    ImageFolder, whose metadata.jsonl / metadata.csv is read as records with file_name as the path."""
    manifest = folder / "manifest.jsonl"
    if is_manifest(manifest):
        if not config.sample.draws:
            return manifest
        records, path_field = manifest, "image_path"
    else:
        records, path_field = metadata_file(folder), FILE_COLUMN
    if config.fetch.out.resolve() == folder.resolve():
        raise InputError(f"--data {folder} is read as records and --out is the same folder; pass another --out")
    fetch = replace(config.fetch, path_field=config.fetch.path_field or path_field)
    before_fetch()
    return fetch_manifest(replace(config, data=str(records), fetch=fetch), say)


# --- preparation -----------------------------------------------------------------------------------

def check_lora(config: FinetuneConfig) -> None:
    """--lora's settings, and that some block is left to adapt (said before any download)."""
    config.lora.check()
    locks = config.locks
    if config.lora.rank and locks.lock_image and locks.lock_text and not locks.unlock_last:
        raise InputError(ALL_LOCKED)


def prepare(config: FinetuneConfig, say: Callable[[str], None] = print, model: CLIP | None = None) -> Prepared:
    """Manifest -> checked items, captions, split and model; all input errors surface here."""
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
    found: list[Path] = []

    def find_model() -> None:
        """Before any fetch: a --model typo, or a hub id with no network, is said before hours of downloads."""
        if model is None:
            found.append(resolve_model_folder(config.model))

    manifest = resolve_manifest(config, say, find_model)
    items = read_manifest(manifest, config.fetch.id_field)
    check = check_images(items)
    skipped_line = check.line() if check.skipped else None
    if skipped_line:
        say(skipped_line)
    items = check.kept
    captions = CaptionBuilder(config.captions, [item.record for item in items])
    empty = [i for i, options in enumerate(captions.options) if not options]
    if empty:  # identical empty captions would teach every image the same text
        if len(empty) == len(items):
            raise InputError(f"{manifest}: every record's caption is empty; name fields that have text with --caption")
        say(f"dropped {len(empty)} records whose caption is empty (first: record {items[empty[0]].record_id!r})")
        items = [item for i, item in enumerate(items) if captions.options[i]]
        captions = CaptionBuilder(config.captions, [item.record for item in items])
    _check_label_field(config, [item.record for item in items])
    config.test_fraction = _test_fraction(config, len(items))
    parts = split(items, config.val_fraction, config.sample.seed, config.sample.stratify, config.test_fraction)
    position = {id(item): i for i, item in enumerate(items)}
    train_index, val_index, test_index = ([position[id(item)] for item in side]
                                          for side in (parts.train, parts.val, parts.test))
    _check_batch_size(config, len(train_index), "the training set")
    if model is None:
        model = load(found[0] if found else config.model, dtype="float32")
    model.tokenizer  # noqa: B018  (a model without tokenizer files fails here, clearly)
    return Prepared(config, manifest, items, skipped_line, captions, train_index, val_index, model,
                    test_index, parts.line(), parts.ids(), len(empty))
