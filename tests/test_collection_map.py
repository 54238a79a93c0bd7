"""The map: PCA finds the direction of largest variance, is cached in the index file, and is made
again when the collection changes; a damaged cache is never trusted."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from mlx_clip.use import collection_map as cmap
from mlx_clip.use.store import CollectionInfo, IndexFile
from mlx_clip.use.vector_search import read_collections


def planted(count=400, dims=16, seed=0):
    """Unit vectors spread mostly along one planted direction (and a second, weaker one)."""
    rng = np.random.default_rng(seed)
    position = np.linspace(-1, 1, count)
    matrix = 0.05 * rng.normal(size=(count, dims)) + np.outer(position, np.eye(dims)[3]) \
        + np.outer(rng.permutation(position) * 0.4, np.eye(dims)[7])
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32), position


def write(path, matrix, labels):
    info = CollectionInfo(name="finds", model_id="mlx-clip/finds", model_source="/m", family="clip",
                          dimensions=matrix.shape[1], label_field="label")
    with IndexFile(path, create=True) as index:
        index.upsert(index.open_collection(info), [(f"r{i}", v, None, b"", {"record_id": f"r{i}", "label": lab})
                                                   for i, (v, lab) in enumerate(zip(matrix, labels))])


def test_pca_puts_the_planted_direction_on_the_first_axis():
    matrix, position = planted()
    coords, explained = cmap.pca_layout(matrix)
    assert abs(np.corrcoef(coords[:, 0], position)[0, 1]) > 0.95
    assert explained[0] > explained[1] > 0 and np.abs(coords).max() == pytest.approx(1.0)
    centred = matrix - matrix.mean(axis=0)
    values = np.linalg.eigvalsh(np.cov(centred.T))[::-1]
    assert explained == pytest.approx((values[:2] / values.sum()).tolist(), rel=1e-3)


def test_the_map_is_cached_and_remade_when_the_collection_changes(tmp_path, monkeypatch):
    matrix, position = planted(60)
    labels = ["left" if p < 0 else "right" for p in position]
    labels[5] = "right"  # far left, labelled right: its neighbours disagree
    write(tmp_path / "i.db", matrix, labels)
    found = read_collections([tmp_path / "i.db"])[0]
    first = cmap.collection_map(found)
    assert (5, "left") in first.worth_checking(cmap.labels_of(found, "label"))
    calls = []
    monkeypatch.setattr(cmap, "pca_layout", lambda m: calls.append(1) or (np.zeros((len(m), 2), np.float32), [0, 0]))
    again = cmap.collection_map(read_collections([tmp_path / "i.db"])[0])
    assert calls == [] and np.array_equal(again.coords, first.coords) and np.array_equal(again.neighbours, first.neighbours)
    write(tmp_path / "i.db", matrix[::-1].copy(), labels)  # re-indexed: same ids, other vectors
    cmap.collection_map(read_collections([tmp_path / "i.db"])[0])
    assert calls == [1]
    with sqlite3.connect(tmp_path / "i.db") as db:  # a damaged cache row: recomputed, not read
        db.execute(f'UPDATE "{cmap.MAP_TABLE}" SET neighbours = ?', (b"\xff" * 40,))
    cmap.collection_map(read_collections([tmp_path / "i.db"])[0])
    assert calls == [1, 1]
