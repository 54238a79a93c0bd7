"""The training set: a manifest.jsonl read, its images checked, and a deterministic split.

A manifest has one JSON object per line: the record's metadata plus `image_path` (relative
to the manifest's folder), as written by fetch.py. Missing and unreadable images are
skipped and counted up front, never one error at a time.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .captions import get_field, value_text
from .errors import InputError

ID_KEYS = ("id", "record_id", "_id", "identifier", "object_id", "objectID", "objectNumber",
           "accession_number", "sha256")


@dataclass
class Item:
    """One record with an image: its id, absolute image path, and the record's metadata."""

    record_id: str
    image_path: Path
    record: dict[str, Any]


def record_id_of(record: dict, index: int, id_field: str | None = None) -> str:
    if id_field:
        value = get_field(record, id_field)
        if value not in (None, ""):
            return value_text(value)
    for key in ID_KEYS:
        value = record.get(key) if isinstance(record, dict) else None
        if value not in (None, ""):
            return value_text(value)
    return str(record.get("image_path") or index)


def read_manifest(path: str | Path, id_field: str | None = None) -> list[Item]:
    """Items of a manifest.jsonl; `image_path` resolved against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (write one with fetch.py, or pass --data RECORDS)")
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not record.get("image_path"):
                raise InputError(f"{path}:{number}: record has no image_path; is this a fetch.py manifest?")
            image_path = Path(str(record["image_path"]))
            if not image_path.is_absolute():
                image_path = path.parent / image_path
            items.append(Item(record_id_of(record, number - 1, id_field), image_path, record))
    if not items:
        raise InputError(f"{path}: manifest has no records")
    return items


def _image_status(path: Path) -> str:
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEGs decode at 1/8 scale: fast, still catches truncation
            image.load()
        return "ok"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "unreadable"


@dataclass
class ImageCheck:
    kept: list[Item]
    missing: int
    unreadable: int

    @property
    def skipped(self) -> int:
        return self.missing + self.unreadable

    def line(self) -> str:
        return f"skipped {self.skipped} records: {self.missing} missing, {self.unreadable} unreadable image"


def check_images(items: Sequence[Item], threads: int = 8) -> ImageCheck:
    """Drop items whose image is missing or does not decode; count each kind."""
    with ThreadPoolExecutor(threads) as pool:
        status = list(pool.map(_image_status, [item.image_path for item in items]))
    kept = [item for item, s in zip(items, status) if s == "ok"]
    check = ImageCheck(kept, status.count("missing"), status.count("unreadable"))
    if not kept:
        raise InputError(f"no usable images: {check.line()}")
    return check


def split_items(items: Sequence[Item], val_fraction: float, seed: int,
                stratify: str | None = None) -> tuple[list[Item], list[Item]]:
    """Deterministic train/validation split (per stratum of `stratify` when given).

    The same records, seed and fraction always give the same split; at least one record
    goes to each side when there are two or more.
    """
    if not 0 <= val_fraction < 1:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0 or len(items) < 2:
        return list(items), []
    order = sorted(range(len(items)), key=lambda i: (items[i].record_id, i))
    groups: dict[str, list[int]] = {}
    for i in order:
        key = value_text(get_field(items[i].record, stratify)) if stratify else ""
        groups.setdefault(key, []).append(i)
    rng = np.random.default_rng(seed)
    val: set[int] = set()
    # round(N * fraction) validation records in all, shared among strata by largest remainder
    # (rounding each stratum alone gives nothing to small strata: many labels, no validation).
    keys = sorted(groups)
    quotas = {k: len(groups[k]) * val_fraction for k in keys}
    takes = {k: int(quotas[k]) for k in keys}
    left = int(round(len(items) * val_fraction)) - sum(takes.values())
    for k in sorted(keys, key=lambda k: -(quotas[k] - takes[k]))[:max(0, left)]:
        takes[k] += 1
    for key in keys:
        members = groups[key]
        perm = rng.permutation(len(members))
        val.update(members[j] for j in perm[:takes[key]])
    if not val:
        val.add(order[int(rng.integers(len(order)))])
    if len(val) == len(items):
        val.discard(next(iter(sorted(val))))
    train = [items[i] for i in range(len(items)) if i not in val]
    return train, [items[i] for i in range(len(items)) if i in val]
