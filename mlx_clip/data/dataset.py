"""The training set: a manifest.jsonl read, its images checked, and a deterministic split
(train / validation / test, by image content so one photo never lands on two sides).

A manifest has one JSON object per line: the record's metadata plus `image_path` (relative
to the manifest's folder), as written by fetch.py. Missing and unreadable images are
skipped and counted up front, never one error at a time.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .captions import value_text
from ..errors import InputError
from .image_files import sha256_hex
from .records import get_field_or_none, manifest_record_id


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
            try:
                rid = manifest_record_id(record, id_field, number - 1)
            except KeyError:
                raise InputError(f"{path}:{number}: field '{id_field}' is missing or empty") from None
            items.append(Item(rid, image_path, record))
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


def image_key(item: Item) -> str:
    """What makes two records "the same image": the manifest's sha256, else the file's own hash.

    Records without a readable file (tests, records not yet fetched) are their own image.
    """
    sha = item.record.get("sha256") if isinstance(item.record, dict) else None
    if sha:
        return str(sha)
    if item.image_path is not None and Path(item.image_path).is_file():
        return sha256_hex(Path(item.image_path).read_bytes())
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

    def ids(self) -> dict[str, Any]:
        """split.json: each side's record ids and the test set's fingerprint."""
        test_ids = [item.record_id for item in self.test]
        return {"train": [item.record_id for item in self.train], "val": [item.record_id for item in self.val],
                "test": test_ids, "fingerprint": fingerprint_of(test_ids)}

    def line(self) -> str:
        if not self.shared_records:
            return "every record has its own image"
        return (f"{self.shared_records} records share {self.shared_images} images with another record; "
                "each image's records stay on one side of the split")


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
          test_fraction: float = 0.0) -> Split:
    """Deterministic train/validation/test split of distinct images (per stratum of `stratify`).

    Records are grouped by image content first, so duplicates of one photo never sit on both
    sides; fractions count distinct images. A group's stratum is that of its first record (by
    id). The same records, seed and fractions always give the same split.
    """
    groups: dict[str, list[int]] = {}
    for i in sorted(range(len(items)), key=lambda i: (items[i].record_id, i)):
        groups.setdefault(image_key(items[i]), []).append(i)
    shared = [members for members in groups.values() if len(members) > 1]
    n_train, n_val, n_test = split_sizes(len(groups), val_fraction, test_fraction)
    strata: dict[str, list[list[int]]] = {}
    for members in sorted(groups.values(), key=lambda m: (items[m[0]].record_id, m[0])):
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
    return Split(parts["train"], parts["val"], parts["test"], sum(map(len, shared)), len(shared))
