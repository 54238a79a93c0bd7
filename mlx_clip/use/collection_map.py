"""The map of a collection: a 2-D layout of its image embeddings, and each record's nearest
neighbours (for "label worth checking"), computed once and cached in the index file.

The layout is PCA (the two directions of largest variance, from numpy): deterministic, exact,
a second for 72,000 x 512 on a laptop CPU, and no new dependency. It is linear, so it keeps
distances honest but packs clusters closer than UMAP or t-SNE would draw them; the page says so.
(umap-learn pulls numba and llvmlite, and t-SNE takes minutes at 72,000 points.)

The cache is one row per collection in table `mlx_clip_maps` (added beside llm's tables; llm
ignores it), keyed by a digest of the record ids and vectors, so a re-indexed collection gets a
fresh map. A read-only index file still gets a map, kept in memory only.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass

import numpy as np

from ..data.records import get_field_or_none
from ..errors import InputError
from .neighbours import blocks, label_disagreement, nearest_neighbours
from .store import IndexFile
from .vector_search import LoadedCollection, field_values

MAP_TABLE = "mlx_clip_maps"
MAP_METHOD = "PCA (numpy: eigenvectors of the covariance)"
NEIGHBOURS = 10
WORTH_CHECKING = 0.5  # flagged when at most this share of a point's labelled neighbours carries its label
MAP_COLOURS = 12  # the most common values get a colour each; the rest are "other"


@dataclass
class CollectionMap:
    method: str
    coords: np.ndarray  # (N, 2) float32, scaled into [-1, 1]
    neighbours: np.ndarray  # (N, k) int32 row indices, nearest first
    explained: list[float]  # share of the variance along each axis

    def worth_checking(self, labels: list[str | None]) -> list[tuple[int, str]]:
        """(row, the label most neighbours carry) for labelled rows whose neighbours mostly carry another."""
        found = []
        for row, (share, top) in enumerate(label_disagreement(self.neighbours, labels)):
            if top is not None and top != labels[row] and share <= WORTH_CHECKING:
                found.append((row, top))
        return found


def signature(collection: LoadedCollection) -> str:
    digest = hashlib.sha256("\n".join(collection.ids).encode("utf-8", "surrogatepass"))
    digest.update(np.ascontiguousarray(collection.matrix).data)
    return digest.hexdigest()


def pca_layout(matrix: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Rows projected on their two principal axes, scaled into [-1, 1]; the variance share of each axis.

    The axes are the top eigenvectors of the D x D covariance, summed over blocks of rows (no
    centred copy of the matrix); LAPACK's SVD of the N x D matrix itself took 21 s at 5,000 x 512
    on this 2-core machine, the covariance and its eigh 0.8 s."""
    count, dims = matrix.shape
    if count < 3:
        return np.zeros((count, 2), np.float32), [0.0, 0.0]
    mean = matrix.mean(axis=0, dtype=np.float64)
    covariance = np.zeros((dims, dims), np.float64)
    for start, stop in blocks(count, 8192):
        centred = matrix[start:stop] - mean.astype(np.float32)
        covariance += centred.T @ centred
    values, vectors = np.linalg.eigh(covariance)  # ascending
    axes = vectors[:, ::-1][:, :2].T.astype(np.float32)
    axes *= np.where(axes.sum(axis=1, keepdims=True) < 0, -1, 1)  # a sign fixed by the data
    coords = (matrix - mean.astype(np.float32)) @ axes.T
    coords /= max(float(np.abs(coords).max()), 1e-12)
    total = max(float(values.sum()), 1e-12)
    return coords.astype(np.float32), [float(values[-1] / total), float(values[-2] / total)]


def labels_of(collection: LoadedCollection, field: str) -> list[str | None]:
    """Each record's value of `field` (a list field: its first item) as a label, or None."""
    return [(field_values(get_field_or_none(r, field)) or [None])[0] for r in collection.records]


def colouring(collection: LoadedCollection, field: str | None, skip: set[str] = frozenset()) -> dict:
    """How both maps colour the records: by `field` (default: the label field, else the first
    facet), the MAP_COLOURS most common values a colour each (slot -1: other, -2: no value)."""
    choices = list(dict.fromkeys(([collection.info.label_field] if collection.info.label_field in collection.fields
                                  else []) + [f for f in collection.facets() if f not in skip]))
    field = field or next(iter(choices), None)
    if field is not None and field not in collection.fields:
        raise InputError(f"collection {collection.key!r} has no field {field[:80]!r}")
    labels = labels_of(collection, field) if field else [None] * len(collection)
    counts: dict[str, int] = {}
    for label in labels:
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
    palette = sorted(counts, key=lambda v: (-counts[v], v))[:MAP_COLOURS]
    slot = {v: i for i, v in enumerate(palette)}
    return {"field": field, "fields": choices if field in choices or field is None else [field] + choices,
            "values": palette, "counts": [counts[v] for v in palette], "labels": labels,
            "colour": [slot.get(v, -1) if v is not None else -2 for v in labels]}


def _read_cache(db: sqlite3.Connection, collection: LoadedCollection, digest: str) -> CollectionMap | None:
    row = db.execute(f'SELECT method, signature, k, coords, neighbours, explained FROM "{MAP_TABLE}" '
                     "WHERE collection_id = ?", (collection.collection_id,)).fetchone()
    if row is None or row[1] != digest:
        return None
    method, _, k, coords, near, explained = row
    count = len(collection)
    if (not isinstance(k, int) or not 0 <= k < max(count, 1) or len(coords or b"") != count * 8
            or len(near or b"") != count * k * 4):
        return None  # a damaged or foreign cache is recomputed, never trusted
    neighbours = np.frombuffer(near, dtype="<i4").reshape(count, k).astype(np.int32)
    if neighbours.size and (neighbours.min() < 0 or neighbours.max() >= count):
        return None
    shares = [float(x) for x in (explained or "0 0").split()[:2]]
    return CollectionMap(str(method), np.frombuffer(coords, dtype="<f4").reshape(count, 2).copy(), neighbours, shares)


def collection_map(collection: LoadedCollection) -> CollectionMap:
    """The cached map when the collection is unchanged, else computed and cached."""
    digest = signature(collection)
    try:
        with IndexFile(collection.index_path) as index:
            index.db.execute(f'CREATE TABLE IF NOT EXISTS "{MAP_TABLE}" ("collection_id" INTEGER PRIMARY KEY, '
                             '"method" TEXT, "signature" TEXT, "k" INTEGER, "coords" BLOB, "neighbours" BLOB, '
                             '"explained" TEXT)')
            cached = _read_cache(index.db, collection, digest)
    except sqlite3.OperationalError:  # a read-only file: no cache
        cached = None
    if cached is not None:
        return cached
    coords, explained = pca_layout(collection.matrix)
    neighbours, _ = nearest_neighbours(collection.matrix, NEIGHBOURS)
    made = CollectionMap(MAP_METHOD, coords, neighbours, explained)
    try:
        with IndexFile(collection.index_path) as index, index.db:
            index.db.execute(f'INSERT OR REPLACE INTO "{MAP_TABLE}" VALUES (?, ?, ?, ?, ?, ?, ?)',
                             (collection.collection_id, MAP_METHOD, digest, neighbours.shape[1],
                              coords.astype("<f4").tobytes(), neighbours.astype("<i4").tobytes(),
                              " ".join(f"{x:.6f}" for x in explained)))
    except sqlite3.OperationalError:
        pass
    return made
