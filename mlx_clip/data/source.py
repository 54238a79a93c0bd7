"""Where a run's images come from: the manifest to train on, given, found in a folder, or fetched
from the records (a sample of them), with what the records alone can show wrong checked before
minutes to hours of downloads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..settings import FinetuneConfig
from ..errors import InputError
from ..wording import counted
from .captions import CaptionBuilder
from .dataset import is_manifest, split_sizes
from .imagefolder import FILE_COLUMN, metadata_file, write_metadata
from .records import Records, get_field_or_none, load_records

AUTO_TEST_FRACTION = 0.1  # --test-fraction's default ...
MIN_AUTO_TEST = 20  # ... when it holds at least this many images; else no test set unless asked

BUNDLED_RECORDS = Path(__file__).resolve().parents[1] / "demo" / "emoji" / "records.jsonl"  # see its README.md
BUNDLED_CAPTION = "{name}, an emoji of {subcategory}"
BUNDLED_LABEL_FIELD = "category"


def fetch_manifest(config: FinetuneConfig, say: Callable[[str], None] = print,
                   records: Records | None = None) -> Path:
    """Draw and fetch the sample of `config.data` (as fetch.py does); returns its manifest.jsonl.
    `records`: config.data as check_before_fetch read it, so a large file is parsed once."""
    from .fetcher import fetch_records

    say(f"fetching images for {config.data} into {config.fetch.out}")
    summary = fetch_records(config.data, config.fetch, sample=config.sample.sample, margin=config.sample.margin,
                            stratify=config.sample.stratify, seed=config.sample.seed, log=say, loaded=records)
    say(str(summary))
    if not config.fetch.list_prefix:  # a dry run's lists leave the folder's metadata.jsonl as it was
        metadata = write_metadata(summary.manifest_path)  # as fetch.py does; only worth a line when it lists images
        if metadata.rows:
            say(str(metadata))
    return Path(summary.manifest_path)


def use_bundled_data(config: FinetuneConfig, say: Callable[[str], None] = print) -> FinetuneConfig:
    """With no data/records.json and neither --data nor --manifest, the emoji set that ships inside
    the package (with captions and labels that suit it), so a fresh clone's first command runs
    instead of stopping at a missing file; else `config` as it is."""
    if config.manifest or config.data != FinetuneConfig.data or Path(config.data).exists():
        return config
    say(f"no {FinetuneConfig.data}: training on the emoji set bundled with mlx_clip ({BUNDLED_RECORDS.parent}); "
        "for your own records pass --data RECORDS (JSON, JSONL, CSV or an ImageFolder)")
    return replace(config, data=str(BUNDLED_RECORDS),
                   fetch=replace(config.fetch, path_field="image_path", url_field=None),
                   captions=config.captions or [BUNDLED_CAPTION],
                   label_field=config.label_field or BUNDLED_LABEL_FIELD)


def resolve_manifest(config: FinetuneConfig, say: Callable[[str], None] = print,
                     before_fetch: Callable[[], None] = lambda: None) -> Path:
    """The manifest to train on: given, found in a folder, or fetched from the records.
    `before_fetch` runs once the records have passed their checks and just before fetching
    (the run finds the model there, so a --model typo is said before hours of downloads).
    `config` has been through `use_bundled_data`."""
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
    from .sampling import choose_sample

    records = load_records(config.data, config.fetch.encoding)
    try:
        indices, _ = choose_sample(records.records, config.sample.sample, config.sample.margin,
                                   config.sample.stratify, config.sample.seed)
    except ValueError as err:
        raise InputError(f"{records.path}: {err}") from None
    sample = [records.records[i] for i in indices]
    CaptionBuilder(config.captions, sample)  # a template naming a field no record has
    check_label_field(config, sample)
    train_size = split_sizes(len(sample), config.val_fraction, resolved_test_fraction(config, len(sample)))[0]
    check_batch_size(config, train_size, f"the sample's training split (of {counted(len(sample), 'record')}, before "
                                         "any image fails)")
    return records


def resolved_test_fraction(config: FinetuneConfig, n: int) -> float:
    """--test-fraction as given, else AUTO_TEST_FRACTION when that gives MIN_AUTO_TEST images or more."""
    if config.test_fraction is not None:
        return config.test_fraction
    return AUTO_TEST_FRACTION if round(n * AUTO_TEST_FRACTION) >= MIN_AUTO_TEST else 0.0


def check_label_field(config: FinetuneConfig, records: list[dict]) -> None:
    if config.label_field and not any(get_field_or_none(r, config.label_field) not in (None, "") for r in records):
        raise InputError(f"--label-field {config.label_field!r}: no record has this field")


def check_batch_size(config: FinetuneConfig, train_size: int, what: str) -> None:
    if config.batch_size > train_size:
        raise InputError(f"--batch-size {config.batch_size} is larger than {what}, which has "
                         f"{counted(train_size, 'record')}; use --batch-size {max(1, train_size)} or less")


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
