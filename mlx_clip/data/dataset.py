"""The training set: a manifest.jsonl read, its images checked, and a deterministic split
(train / validation / test, by group: one photo, or one object with --group-field, never lands on two sides).

A manifest has one JSON object per line: the record's metadata plus `image_path` (relative
to the manifest's folder), as written by fetch.py. Missing and unreadable images are
skipped and counted up front, never one error at a time.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .captions import value_text
from ..errors import InputError
from ..io import read_jsonl
from .groups import RecordGroups, record_groups
from .image_files import file_sha256
from ..models.image_open import MAX_PIXELS, ImageTooLarge, check_pixels
from .record_ids import check_unique_ids, manifest_record_id
from .records import get_field_or_none
from ..wording import counted


@dataclass
class Item:
    """One record with an image: its id, absolute image path, and the record's metadata."""

    record_id: str
    image_path: Path
    record: dict[str, Any]


def is_manifest(path: Path) -> bool:
    """A manifest.jsonl written by fetch.py (image_path and sha256 on its first record)."""
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and "image_path" in first and "sha256" in first
    return False


def read_manifest(path: str | Path, id_field: str | None = None) -> list[Item]:
    """Items of a manifest.jsonl; `image_path` resolved against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (write one with fetch.py, or pass --data RECORDS)")
    items, lines = [], []
    for number, record in read_jsonl(path):
        if not record.get("image_path"):
            raise InputError(f"{path}: line {number}: record has no image_path; is this a fetch.py manifest?")
        image_path = Path(str(record["image_path"]))
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        try:
            rid = manifest_record_id(record, id_field, number - 1)
        except KeyError:
            raise InputError(f"{path}: line {number}: field '{id_field}' is missing or empty") from None
        items.append(Item(rid, image_path, record))
        lines.append(f"line {number}")
    if not items:
        raise InputError(f"{path}: manifest has no records")
    check_unique_ids((item.record_id for item in items), path, lines)
    return items


def _image_status(path: Path) -> str:
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as image:
            check_pixels(*image.size, str(path))  # from the header: nothing over the budget is decoded
            image.draft("RGB", (64, 64))  # JPEGs decode at 1/8 scale: fast, still catches truncation
            image.load()
        return "ok"
    except ImageTooLarge:
        return "too_large"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "unreadable"


@dataclass
class ImageCheck:
    kept: list[Item]
    missing: int
    unreadable: int
    too_large: int = 0  # over the pixel budget (models/image_open.py)
    first_too_large: str = ""  # "record 'id' (path)" of the first one, for the line

    @property
    def skipped(self) -> int:
        return self.missing + self.unreadable + self.too_large

    def line(self) -> str:
        line = f"skipped {counted(self.skipped, 'record')}: {self.missing} missing, {self.unreadable} unreadable image"
        return line + (f", {self.too_large} over {MAX_PIXELS / 1e6:g} megapixels (first: {self.first_too_large})"
                       if self.too_large else "")


def check_images(items: Sequence[Item], threads: int = 8) -> ImageCheck:
    """Drop items whose image is missing or does not decode; count each kind."""
    with ThreadPoolExecutor(threads) as pool:
        status = list(pool.map(_image_status, [item.image_path for item in items]))
    kept = [item for item, s in zip(items, status) if s == "ok"]
    large = [item for item, s in zip(items, status) if s == "too_large"]
    first = f"record {large[0].record_id!r} ({large[0].image_path})" if large else ""
    check = ImageCheck(kept, status.count("missing"), status.count("unreadable"), len(large), first)
    if not kept:
        raise InputError(f"no usable images: {check.line()}")
    return check


def image_key(item: Item) -> str:
    """What makes two records "the same image": the manifest's sha256, else the file's own hash.

    Records without a readable file (tests, records not yet fetched) are their own image.
    """
    sha = item.record.get("sha256") if isinstance(item.record, dict) else None
    if sha:
        return str(sha)
    if item.image_path is not None and Path(item.image_path).is_file():
        return file_sha256(item.image_path)
    return f"record:{item.record_id}"


def fingerprint_of(record_ids: Sequence[str]) -> str:
    """sha256 of the sorted test record ids, one per line: equal for runs sharing one test set."""
    return hashlib.sha256("\n".join(sorted(record_ids)).encode("utf-8")).hexdigest()


def split_sizes(n: int, val_fraction: float, test_fraction: float = 0.0) -> tuple[int, int, int]:
    """(train, val, test) sizes `split` gives n distinct images; checks the fractions first."""
    if not 0 <= val_fraction < 1:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not 0 <= test_fraction < 1:
        raise InputError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if val_fraction + test_fraction >= 1:
        raise InputError(f"--val-fraction {val_fraction:g} + --test-fraction {test_fraction:g} leave no "
                         "training data; keep their sum below 1")
    test = int(round(n * test_fraction))
    val = int(round(n * val_fraction))
    if val_fraction > 0 and n - test >= 2:
        val = max(1, val)
    val = min(val, max(0, n - test - 1))
    return n - val - test, val, test


@dataclass
class Split:
    """Train, validation and test items; no image (by content) is on two sides."""

    train: list[Item]
    val: list[Item]
    test: list[Item]
    shared_records: int  # records whose image at least one other record also has
    shared_images: int  # distinct images attached to two or more records
    joined: list[list[str]] = field(default_factory=list)  # record ids of each group of two or more
    group_field: str | None = None  # --group-field, whose objects stay on one side too


    def ids(self) -> dict[str, Any]:
        """split.json: each side's record ids, the test set's fingerprint, and the record ids of
        every group of two or more records (one image or one object: `check_groups` reads them)."""
        test_ids = [item.record_id for item in self.test]
        return {"train": [item.record_id for item in self.train], "val": [item.record_id for item in self.val],
                "test": test_ids, "fingerprint": fingerprint_of(test_ids), "groups": self.joined}

    def line(self) -> str:
        objects = (f"; each object's records (--group-field {self.group_field}) stay on one side"
                   if self.group_field else "")
        if not self.shared_records:
            return "every record has its own image" + objects
        return (f"{self.shared_records} records share {counted(self.shared_images, 'image')} with another record; "
                "each image's records stay on one side of the split" + objects)


def _largest_remainder(sizes: dict[str, int], total: int) -> dict[str, int]:
    """`total` shared among strata in proportion to their sizes (rounding each alone starves small strata)."""
    n = sum(sizes.values())
    quotas = {k: sizes[k] * total / n if n else 0.0 for k in sizes}
    takes = {k: int(quotas[k]) for k in sizes}
    left = total - sum(takes.values())
    for k in sorted(sizes, key=lambda k: (-(quotas[k] - takes[k]), k))[:max(0, left)]:
        takes[k] += 1
    return takes


def split(items: Sequence[Item], val_fraction: float, seed: int, stratify: str | None = None,
          test_fraction: float = 0.0, groups: RecordGroups | None = None) -> Split:
    """Deterministic train/validation/test split of groups (per stratum of `stratify`).

    `groups`: each record's group (data/groups.py: equal image content joined with equal
    --group-field values); default: by image content alone. A group never sits on two sides;
    fractions count groups. A group's stratum is that of its first record (by id). The same
    records, groups, seed and fractions always give the same split.
    """
    if groups is None:
        groups = record_groups([image_key(item) for item in items], [item.record for item in items])
    keys, group_of = groups.image_keys, groups.of_record
    members_of: dict[int, list[int]] = {}
    for i in sorted(range(len(items)), key=lambda i: (items[i].record_id, i)):
        members_of.setdefault(group_of[i], []).append(i)
    per_image = Counter(keys)
    shared_images = sum(1 for count in per_image.values() if count > 1)
    shared_records = sum(count for count in per_image.values() if count > 1)
    n_train, n_val, n_test = split_sizes(len(members_of), val_fraction, test_fraction)
    strata: dict[str, list[list[int]]] = {}
    for members in sorted(members_of.values(), key=lambda m: (items[m[0]].record_id, m[0])):
        key = value_text(get_field_or_none(items[members[0]].record, stratify)) if stratify else ""
        strata.setdefault(key, []).append(members)
    sizes = {k: len(v) for k, v in strata.items()}
    test_takes = _largest_remainder(sizes, n_test)
    val_takes = _largest_remainder({k: sizes[k] - test_takes[k] for k in sizes}, n_val)
    rng = np.random.default_rng(seed)
    side: dict[int, str] = {}
    for key in sorted(strata):
        members = strata[key]
        perm = rng.permutation(len(members))
        for rank, j in enumerate(perm):
            name = ("test" if rank < test_takes[key] else
                    "val" if rank < test_takes[key] + val_takes[key] else "train")
            for i in members[j]:
                side[i] = name
    parts = {name: [items[i] for i in range(len(items)) if side[i] == name] for name in ("train", "val", "test")}
    joined = [[items[i].record_id for i in members] for members in members_of.values() if len(members) > 1]
    return Split(parts["train"], parts["val"], parts["test"], shared_records, shared_images, joined,
                 groups.group_field)


def crossing_groups(split_ids: dict[str, Any]) -> list[list[str]]:
    """The groups of a split.json whose records sit on more than one side (none, for a split made here)."""
    side = {rid: name for name in ("train", "val", "test") for rid in split_ids.get(name, [])}
    return [members for members in split_ids.get("groups", []) if len({side.get(rid) for rid in members}) > 1]
