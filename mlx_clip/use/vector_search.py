"""One collection held for searching: its vectors once, as one float32 matrix, and each record's
fields; top-k by dot product (the vectors are unit length, so it is the cosine), with field
filters applied before ranking, so a filter never empties a page that the whole collection filled.

At 72,000 records of 512 dimensions the matrix is 147 MB; it is filled chunk by chunk from the
index file into a matrix allocated once (never a list of chunks plus their concatenation).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..data.coordinates import field_paths
from ..data.records import get_field_or_none
from ..errors import InputError
from .neighbours import INDISTINCT_SIMILARITY, hardly_tells_apart, indistinct_share
from .store import CollectionInfo, IndexFile

RESERVED_FIELDS = ("record_id", "image_path", "record_url", "title", "sha256")
"""Metadata keys index.py adds to every record: not catalogue fields, never offered as facets or filters."""
FACET_LIMIT = 40
"""A field with at most this many distinct values gets a facet (period, material, site...)."""


def field_values(value: Any) -> list[str]:
    """The strings a filter compares: a scalar as text, each item of a list; dicts and empty values none."""
    if value is None or value == "" or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [v for item in value for v in field_values(item)]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    return [str(value)]


@dataclass
class Hit:
    row: int
    score: float


class LoadedCollection:
    """A collection's vectors, record ids and fields, read once from its index file."""

    def __init__(self, key: str, index_path: Path, collection_id: int, info: CollectionInfo,
                 ids: list[str], matrix: np.ndarray, records: list[dict[str, Any]]):
        self.key = key  # the name the page and the API use (the collection's name, made unique)
        self.index_path = index_path
        self.collection_id = collection_id
        self.info = info
        self.ids = ids
        self.matrix = matrix
        self.records = records
        self.row_of = {rid: i for i, rid in enumerate(ids)}
        # dotted paths, as every flag names a field: a nested catalogue's object.type is a field of its own
        paths = {k for r in records for k in field_paths(r) if k not in RESERVED_FIELDS}
        self.fields = sorted(k for k in paths if not any(p.startswith(k + ".") for p in paths))  # not a null parent
        self.facets_by_limit: dict[int, dict[str, list[tuple[str, int]]]] = {}
        self.value_rows: dict[str, dict[str, np.ndarray]] = {}

    @cached_property
    def blind_note(self) -> str | None:
        """A line for the page when the model hardly tells this collection's images apart (its
        rankings then say little), from a seeded sample of pairs; None when it does tell them apart."""
        passing, pairs, images = indistinct_share(self.matrix)
        if not hardly_tells_apart(passing, pairs, images):
            return None
        which = (f"its {images:,} images" if images == len(self.ids) else
                 f"{images:,} of its {len(self.ids):,} images (a seeded sample)")
        return (f"this model hardly tells these images apart: {passing / pairs:.0%} of the pairs of {which} score "
                f"{INDISTINCT_SIMILARITY:g} or more (cosine), so its rankings say little (an untrained or collapsed "
                "model?)")

    @classmethod
    def read(cls, index: IndexFile, name: str, key: str | None = None) -> "LoadedCollection":
        cid, info = index.collection(name)
        count = index.count(cid)
        matrix = np.empty((count, info.dimensions), dtype=np.float32)
        ids: list[str] = []
        for chunk_ids, chunk in index.vectors(cid, info.dimensions):
            if len(ids) + len(chunk_ids) > count:
                raise InputError(f"{index.path}: collection {name!r} changed while it was read; start again")
            matrix[len(ids):len(ids) + len(chunk_ids)] = chunk
            ids.extend(chunk_ids)
        matrix = matrix[:len(ids)]
        fields_of = dict(index.metadata_rows(cid))
        records = [fields_of.get(rid, {}) for rid in ids]
        norms = np.linalg.norm(matrix, axis=1)
        if len(norms) and not np.all(np.isfinite(norms)):
            raise InputError(f"{index.path}: collection {name!r} holds vectors that are not finite")
        return cls(key or name, index.path, cid, info, ids, matrix, records)

    def __len__(self) -> int:
        return len(self.ids)

    def title(self, row: int) -> str:
        record = self.records[row]
        title = record.get("title")
        if title in (None, "") and self.info.title_field:
            title = get_field_or_none(record, self.info.title_field)
        return str(title) if title not in (None, "") else self.ids[row]

    def facets(self, limit: int = FACET_LIMIT) -> dict[str, list[tuple[str, int]]]:
        """field -> [(value, count)] most common first, for fields with few distinct values (counted once)."""
        if limit not in self.facets_by_limit:
            self.facets_by_limit[limit] = self.count_facets(limit)
        return self.facets_by_limit[limit]

    def count_facets(self, limit: int) -> dict[str, list[tuple[str, int]]]:
        out = {}
        for name in self.fields:
            counts: Counter[str] = Counter()
            for record in self.records:
                counts.update(set(field_values(get_field_or_none(record, name))))
                if len(counts) > limit:
                    break
            if 0 < len(counts) <= limit and any(c > 1 for c in counts.values()):
                out[name] = counts.most_common()
        return out

    def mask(self, filters: dict[str, str]) -> np.ndarray | None:
        """Rows whose every filtered field holds the value (a list field: among its items); None: no filter."""
        if not filters:
            return None
        unknown = [f for f in filters if f not in self.fields]
        if unknown:
            raise InputError(f"collection {self.key!r} has no field {unknown[0]!r} "
                             f"(fields: {', '.join(self.fields) or 'none'})")
        keep = np.ones(len(self.ids), dtype=bool)
        for name, wanted in filters.items():
            passing = np.zeros(len(self.ids), dtype=bool)
            passing[self.rows_by_value(name).get(wanted, [])] = True
            keep &= passing
        return keep

    def rows_by_value(self, name: str) -> dict[str, np.ndarray]:
        """value -> the rows holding it, for one field (built on its first filter, then kept)."""
        if name not in self.value_rows:
            found: dict[str, list[int]] = {}
            for row, record in enumerate(self.records):
                for value in set(field_values(get_field_or_none(record, name))):
                    found.setdefault(value, []).append(row)
            self.value_rows[name] = {v: np.array(rows, dtype=np.int64) for v, rows in found.items()}
        return self.value_rows[name]

    def search(self, query: np.ndarray, k: int, filters: dict[str, str] | None = None,
               also: np.ndarray | None = None) -> tuple[list[Hit], int]:
        """The k best rows for a unit query vector among the rows the filters (and the row mask
        `also`, e.g. a place filter's) keep, and how many they kept."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.matrix.shape[1]:
            raise InputError(f"collection {self.key!r} holds {self.matrix.shape[1]}-dimensional vectors; "
                             f"the query has {query.shape[0]}")
        keep = self.mask(filters or {})
        if also is not None:
            keep = also if keep is None else keep & also
        rows = np.arange(len(self.ids)) if keep is None else np.flatnonzero(keep)
        if len(rows) == 0:
            return [], 0
        scores = self.matrix[rows] @ query if keep is not None else self.matrix @ query
        k = min(k, len(rows))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.lexsort((best, -scores[best]))]  # by score, ties by index order: stable pages
        return [Hit(int(rows[i]), float(scores[i])) for i in best], len(rows)

    def vector_of(self, record_id: str) -> np.ndarray:
        if record_id not in self.row_of:
            raise InputError(f"collection {self.key!r} has no record {record_id!r}")
        return self.matrix[self.row_of[record_id]]


def read_collections(paths: Iterable[str | Path]) -> list[LoadedCollection]:
    """Every collection of every index file; a name seen twice gets its file's name appended."""
    loaded: list[LoadedCollection] = []
    for path in paths:
        with IndexFile(path) as index:
            names = list(index.collections())
            if not names:
                raise InputError(f"{path}: holds no collection (make one with index.py)")
            for name in names:
                key = name if all(c.key != name for c in loaded) else f"{name} ({Path(path).name})"
                loaded.append(LoadedCollection.read(index, name, key))
    return loaded
