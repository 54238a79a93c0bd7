"""Fetched data as a Hugging Face ImageFolder, and an ImageFolder as records to train on.

fetch.py writes ``metadata.jsonl`` beside ``manifest.jsonl`` so that
``datasets.load_dataset("imagefolder", data_dir=OUT)`` loads each image with its record (and
``push_to_hub`` shares it). ``datasets`` infers one type per column from the file and rejects
what it cannot type, so the rows are written to be loadable: a column whose values disagree
in type (``1850`` in one record, ``"c. 1850"`` in another) is written as text, keys that
ImageFolder would take for image columns are renamed, and only images inside OUT are listed
(ImageFolder refuses paths that leave its folder).
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_jsonl, write_jsonl

METADATA_NAME = "metadata.jsonl"
METADATA_NAMES = ("metadata.jsonl", "metadata.csv")  # what --data DIR reads (datasets also reads .parquet)
FILE_COLUMN = "file_name"  # ImageFolder's image column; it loads as "image"
_CONFLICT = "conflict"


@dataclass
class MetadataSummary:
    """What write_metadata wrote: how many images metadata.jsonl lists, and how many it cannot."""

    path: Path
    rows: int
    outside: int  # images outside the folder (local paths from the records): ImageFolder cannot list them

    def __str__(self) -> str:
        folder = self.path.parent
        if not self.rows and not self.outside:
            return f"no {self.path}: no usable image to list"
        if not self.rows:
            return (f"no {self.path}: the {self.outside:,} images stay outside {folder}, where the records' paths "
                    "put them, and an ImageFolder reads only files inside its folder")
        line = (f'wrote {self.path} ({self.rows:,} images): datasets.load_dataset("imagefolder", '
                f'data_dir="{folder}") reads it')
        if self.outside:
            line += f"; the {self.outside:,} images outside {folder} (local paths from the records) are not in it"
        return line


def write_metadata(manifest_path: Path) -> MetadataSummary:
    """Write ``metadata.jsonl`` beside ``manifest_path`` (removing a stale one when no image is inside)."""
    manifest_path = Path(manifest_path)
    target = manifest_path.parent / METADATA_NAME
    entries = [entry for _, entry in read_jsonl(manifest_path)]
    rows = [row for row in (_metadata_row(entry) for entry in entries) if row is not None]
    if rows:
        write_jsonl(target, _loadable(rows))
    else:
        target.unlink(missing_ok=True)  # a stale one would describe another sample
    return MetadataSummary(target, len(rows), len(entries) - len(rows))


def _metadata_row(entry: dict) -> dict | None:
    """A manifest entry as an ImageFolder row, or None when its image lies outside the folder."""
    image_path = posixpath.normpath(str(entry.get("image_path", "")).replace("\\", "/"))
    if posixpath.isabs(image_path) or image_path == ".." or image_path.startswith("../") or image_path == ".":
        return None
    row: dict[str, Any] = {FILE_COLUMN: image_path}
    for key, value in entry.items():
        if key != "image_path":
            row[_safe_key(key, top=True)] = _safe_value(value)
    return row


def _safe_key(key: str, top: bool = False) -> str:
    """A key ImageFolder keeps as data: ``*file_name(s)`` would be read as image paths, and a
    top-level ``image`` would collide with the image column."""
    for suffix, plain in (("file_names", "filenames"), ("file_name", "filename")):
        if key == suffix or key.endswith("_" + suffix):
            return key[: -len(suffix)] + plain
    return "record_image" if top and key == "image" else key


def _safe_value(value: Any) -> Any:
    """Nested keys made safe as above; an empty object becomes null (Arrow has no empty struct)."""
    if isinstance(value, dict):
        return {_safe_key(k): _safe_value(v) for k, v in value.items()} or None
    if isinstance(value, list):
        return [_safe_value(v) for v in value]
    return value


def _loadable(rows: list[dict]) -> list[dict]:
    """Rows whose every column has one type; a column that mixes types is written as text."""
    kinds: dict[str, Any] = {}
    for row in rows:
        for key, value in row.items():
            kinds[key] = _merge(kinds.get(key), _kind(value))
    mixed = {key for key, kind in kinds.items() if kind == _CONFLICT}
    if not mixed:
        return rows
    return [{k: (_as_text(v) if k in mixed else v) for k, v in row.items()} for row in rows]


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _kind(value: Any) -> Any:
    """The Arrow type a value will be read as, coarsely: None (null), a name, or a nested tuple."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "number" if -(2 ** 63) <= value < 2 ** 63 else _CONFLICT
    if isinstance(value, float):
        return "number" if math.isfinite(value) else _CONFLICT
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        item = None
        for v in value:
            item = _merge(item, _kind(v))
        return _CONFLICT if item == _CONFLICT else ("list", item)
    if isinstance(value, dict):
        fields = {k: _kind(v) for k, v in value.items()}
        return _CONFLICT if _CONFLICT in fields.values() else ("struct", fields)
    return _CONFLICT


def _merge(a: Any, b: Any) -> Any:
    """The kind that holds both (null fits any; integers and floats are both numbers)."""
    if a is None or b is None:
        return b if a is None else a
    if a == _CONFLICT or b == _CONFLICT or isinstance(a, str) or isinstance(b, str) or a[0] != b[0]:
        return a if a == b else _CONFLICT
    if a[0] == "list":
        item = _merge(a[1], b[1])
        return _CONFLICT if item == _CONFLICT else ("list", item)
    fields = dict(a[1])
    for key, kind in b[1].items():
        fields[key] = _merge(fields.get(key), kind)
        if fields[key] == _CONFLICT:
            return _CONFLICT
    return ("struct", fields)


def metadata_file(folder: Path) -> Path:
    """The metadata file of the ImageFolder ``folder`` given as --data; one clear line otherwise."""
    found = [folder / name for name in METADATA_NAMES if (folder / name).is_file()]
    if len(found) > 1:
        raise InputError(f"{folder}: holds both metadata.jsonl and metadata.csv; keep one")
    if found:
        return found[0]
    if (folder / "metadata.parquet").is_file():
        raise InputError(f"{folder}: metadata.parquet is not read here; save the metadata as metadata.jsonl or "
                         "metadata.csv (datasets: Dataset.to_json / to_csv)")
    splits = sorted({p.parent.name for name in METADATA_NAMES for p in folder.glob(f"*/{name}")})
    if splits:
        raise InputError(f"{folder}: an ImageFolder with splits ({', '.join(splits)}); pass one split's folder, "
                         f"e.g. --data {folder / splits[0]}")
    raise InputError(f"{folder}: a folder without manifest.jsonl (fetch.py's) or metadata.jsonl / metadata.csv "
                     "with a file_name column (an ImageFolder); pass --data RECORDS for a records file")
