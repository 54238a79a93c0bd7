"""Which records show the same thing: one image (equal content) or one object (`--group-field`).

A catalogue often photographs one object several times (front, back, profile). Records that share
an image, or share the group field's value, are one group: the split keeps a group on one side
(else the same object is trained on and tested on) and the loss counts its members as each
other's positives. Both relations are joined (connected components over records), so a record
sharing an image with one object and the group field with another joins all three. A record
whose group field is empty is a group of its own (unless it shares an image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .captions import value_text
from .records import get_field_or_none


@dataclass
class RecordGroups:
    """Per record, its group (0..count-1, numbered by first appearance); what the console says."""

    of_record: list[int]
    group_field: str | None
    image_keys: list[str]  # each record's image content (dataset.image_key)

    @property
    def count(self) -> int:
        return len(set(self.of_record))

    def sizes(self) -> np.ndarray:
        return np.bincount(np.asarray(self.of_record, np.int64)) if self.of_record else np.zeros(0, np.int64)

    @property
    def can_pair(self) -> bool:
        """Whether image-to-image recall asks anything: some group holds two different images (two
        photos of one object). Records sharing one image are one picture, not a pair: any model
        finds its copy, and a collapsed one (every image tied) read that as +1.000 recall."""
        first: dict[int, str] = {}
        return any(first.setdefault(group, key) != key for group, key in zip(self.of_record, self.image_keys))

    def members(self) -> list[list[int]]:
        """Record positions of each group, in group order."""
        out: list[list[int]] = [[] for _ in range(self.count)]
        for i, group in enumerate(self.of_record):
            out[group].append(i)
        return out

    def line(self) -> str | None:
        """ "1,566 records in 512 objects (--group-field object_uri): 1-9 records each, median 3";
        None without a group field."""
        if not self.group_field:
            return None
        sizes = self.sizes()
        return (f"{len(self.of_record):,} records in {self.count:,} objects (--group-field {self.group_field}): "
                f"{int(sizes.min())}-{int(sizes.max())} records each, median {float(np.median(sizes)):g}")


def _key_groups(keys: Sequence[str | None]) -> list[tuple[int, int]]:
    """Edges joining each record to the first record with the same (non-empty) key."""
    first: dict[str, int] = {}
    return [(i, first.setdefault(key, i)) for i, key in enumerate(keys) if key]


def join_groups(n: int, *keys: Sequence[str | None]) -> list[int]:
    """Connected components of records joined by equal keys (each sequence one relation; None or ""
    joins nothing), numbered 0.. in order of each component's first record."""
    edges = [edge for relation in keys for edge in _key_groups(relation)]
    if n == 0:
        return []
    rows = np.array([a for a, _ in edges] or [0], np.int64)
    cols = np.array([b for _, b in edges] or [0], np.int64)
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    renumber: dict[int, int] = {}
    return [renumber.setdefault(int(label), len(renumber)) for label in labels]


def group_field_values(records: Sequence[dict], group_field: str | None) -> list[str | None]:
    """Each record's --group-field value as text (None when empty or without a group field)."""
    if not group_field:
        return [None] * len(records)
    return [value_text(get_field_or_none(r, group_field)) or None for r in records]


def record_groups(image_keys: Sequence[str], records: Sequence[dict], group_field: str | None = None) -> RecordGroups:
    """Groups of records joined by equal image content (`image_keys`) or equal `group_field` values."""
    joined = join_groups(len(records), image_keys, group_field_values(records, group_field))
    return RecordGroups(joined, group_field, list(image_keys))
