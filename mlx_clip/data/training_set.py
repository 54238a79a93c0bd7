"""The data step in one place: records -> manifest -> checked images -> captions -> groups -> split.

`build_training_set` returns everything training needs from the data, with the config resolved
once (the bundled emoji set's settings, the automatic test fraction) by `dataclasses.replace`:
the caller's config is never changed. Every input error surfaces here, before training starts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..settings import FinetuneConfig
from ..errors import InputError
from ..wording import counted
from .captions import CaptionBuilder, value_text
from .dataset import Item, check_images, image_key, read_manifest, split
from .groups import RecordGroups, record_groups
from .records import get_field_or_none, has_field
from .source import (check_batch_size, check_label_field, resolve_manifest, resolved_test_fraction,
                     use_bundled_data)
from .stream import EvalSet, TrainStream

DEFAULT_CAPTIONS = "(default: built from the record's text fields)"  # the card's line when no --caption
MISSING_LABEL = "(missing)"  # label_counts' row for records without a --label-field value (not a label)


@dataclass
class TrainingSet:
    """A run's data, ready to train: records with usable images, their captions, groups and split."""

    config: FinetuneConfig  # as resolved: the run's config.json
    manifest: Path
    items: list[Item]
    captions: CaptionBuilder
    train_index: list[int]
    val_index: list[int]
    test_index: list[int] = field(default_factory=list)
    groups: RecordGroups | None = None  # one image or one object (--group-field): never split, positives
    skipped_line: str | None = None  # records whose image is missing or unreadable
    split_line: str = ""  # how many records share an image
    split_ids: dict = field(default_factory=dict)  # split.json
    dropped_empty: int = 0  # records whose caption rendered empty
    # built once by the data step: validation picks the best epoch, the test set gives the before/after figures
    val_set: EvalSet = field(default_factory=lambda: EvalSet([], [], []))
    test_set: EvalSet = field(default_factory=lambda: EvalSet([], [], []))

    def group_of(self, index: list[int]) -> list[int]:
        """The record groups of the records at `index` (each record its own without groups)."""
        return [self.groups.of_record[i] for i in index] if self.groups else list(range(len(index)))

    @property
    def steps_per_epoch(self) -> int:
        return self.config.steps_per_epoch(len(self.train_index))

    def label(self, i: int) -> str | None:
        """Record i's --label-field value as text (None without a label field or value)."""
        field_name = self.config.label_field
        return (value_text(get_field_or_none(self.items[i].record, field_name)) or None) if field_name else None

    def label_counts(self, index: list[int] | None = None) -> Counter:
        """How many records (all, or those at `index`) carry each label; MISSING_LABEL counts the rest."""
        return Counter(self.label(i) or MISSING_LABEL for i in (range(len(self.items)) if index is None else index))

    def eval_set(self, index: list[int]) -> EvalSet:
        """The records at `index` as an evaluation set (the data step builds val_set and test_set with it)."""
        pairs = self.groups is not None and self.groups.can_pair  # else image-to-image recall asks nothing
        return EvalSet(
            image_paths=[str(self.items[i].image_path) for i in index],
            captions=[self.captions.first(i) for i in index],
            labels=[self.label(i) for i in index],
            groups=self.group_of(index) if pairs else None,
            images=[self.groups.image_keys[i] for i in index] if pairs else None,
        )

    def data_summary(self) -> dict:
        """What the model card says about the data (runs/NAME/data.json; CardInfo.from_run reads it)."""
        config, sample = self.config, self.config.sample
        labels = None
        if config.label_field:
            labels = {"field": config.label_field, "counts": dict(self.label_counts().most_common())}
        return {"source": config.manifest or config.data, "records": len(self.items),
                "train": len(self.train_index), "val": len(self.val_index), "test": len(self.test_index),
                "sample": {"method": f"stratified by {sample.stratify}" if sample.stratify else "simple random",
                           "size": sample.sample, "margin": sample.margin, "seed": sample.seed} if sample.draws else None,
                "labels": labels, "caption_templates": config.captions or [DEFAULT_CAPTIONS]}

    def train_stream(self, model) -> TrainStream:
        """The training records' batches, as `model` (its tokenizer, image processor and size) takes them."""
        return TrainStream([self.items[i] for i in self.train_index], self.captions, model.tokenizer,
                           model.image_processor, model.config.vision.image_size, self.config.batch_size,
                           self.config.sample.seed, self.config.augment, threads=self.config.threads,
                           caption_index=self.train_index, groups=self.group_of(self.train_index))


def check_group_field(config: FinetuneConfig, records: list[dict], where: str) -> None:
    """--group-field names a field some record has (else every record would be its own object, silently)."""
    if config.group_field and not any(has_field(r, config.group_field) for r in records):
        raise InputError(f"{where}: --group-field {config.group_field!r}: no record has this field")


def usable_items(manifest: Path, config: FinetuneConfig, say: Callable[[str], None]
                 ) -> tuple[list[Item], CaptionBuilder, str | None, int]:
    """The manifest's records whose image decodes and whose caption has text; with their captions,
    the skipped-images line and how many were dropped for an empty caption."""
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
        say(f"dropped {counted(len(empty), 'record')} whose caption is empty (first: record {items[empty[0]].record_id!r})")
        items = [item for i, item in enumerate(items) if captions.options[i]]
        captions = CaptionBuilder(config.captions, [item.record for item in items])
    return items, captions, skipped_line, len(empty)


def build_training_set(config: FinetuneConfig, say: Callable[[str], None] = print,
                       before_fetch: Callable[[], None] = lambda: None,
                       find_manifest: Callable[..., Path] = resolve_manifest) -> TrainingSet:
    """The data step: the manifest (given, found, or fetched from the records, `before_fetch` just
    before a fetch), its usable records and captions, their groups and the split. `find_manifest`
    (config, say, before_fetch) -> manifest is resolve_manifest, or under mlx.launch one that lets
    one process per machine fetch."""
    config = use_bundled_data(config, say)
    manifest = find_manifest(config, say, before_fetch)
    items, captions, skipped_line, dropped_empty = usable_items(manifest, config, say)
    records = [item.record for item in items]
    check_label_field(config, records)
    check_group_field(config, records, str(manifest))
    config = replace(config, test_fraction=resolved_test_fraction(config, len(items)))
    groups = record_groups([image_key(item) for item in items], records, config.group_field)
    if groups.line():
        say(groups.line())
    parts = split(items, config.val_fraction, config.sample.seed, config.sample.stratify, config.test_fraction,
                  groups)
    position = {id(item): i for i, item in enumerate(items)}
    train_index, val_index, test_index = ([position[id(item)] for item in side]
                                          for side in (parts.train, parts.val, parts.test))
    check_batch_size(config, len(train_index), "the training set")
    data = TrainingSet(config, manifest, items, captions, train_index, val_index, test_index, groups,
                       skipped_line, parts.line(), parts.ids(), dropped_empty)
    return replace(data, val_set=data.eval_set(val_index), test_set=data.eval_set(test_index))
