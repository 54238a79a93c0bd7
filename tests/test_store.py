"""The collection index file is llm's own schema: llm reads what mlx_clip.use.store writes."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_clip.errors import InputError
from mlx_clip.use.store import CollectionInfo, IndexFile


def info(name="finds", source="/models/a", dims=4):
    return CollectionInfo(name=name, model_id=f"mlx-clip/{name}", model_source=source, family="clip",
                          dimensions=dims)


def test_llm_reads_the_collection_and_its_metadata(tmp_path):
    llm = pytest.importorskip("llm")
    sqlite_utils = pytest.importorskip("sqlite_utils")
    path = tmp_path / "c.db"
    vectors = np.eye(4, dtype=np.float32)
    with IndexFile(path, create=True) as index:
        cid = index.open_collection(info())
        index.upsert(cid, [(f"r{i}", vectors[i], f"title {i}", bytes([i]), {"record_id": f"r{i}", "period": "Roman"})
                           for i in range(4)])
    db = sqlite_utils.Database(path)
    collection = llm.Collection("finds", db=db)
    assert collection.model_id == "mlx-clip/finds"
    assert collection.count() == 4
    best = collection.similar_by_vector([0.0, 0.9, 0.1, 0.0], number=2)
    assert [e.id for e in best] == ["r1", "r2"]
    assert best[0].metadata == {"record_id": "r1", "period": "Roman"}
    assert best[0].content == "title 1"
    # llm found its migrations applied and changed nothing
    assert db["embeddings"].count == 4


def test_a_collection_refuses_vectors_of_another_model(tmp_path):
    path = tmp_path / "c.db"
    with IndexFile(path, create=True) as index:
        index.open_collection(info())
        index.open_collection(info(name="base", source="/models/b"))  # another collection: fine
        with pytest.raises(InputError, match="would mix vectors"):
            index.open_collection(info(source="/models/b"))
        with pytest.raises(InputError, match="would mix vectors"):
            index.open_collection(info(dims=8))
        assert set(index.collections()) == {"finds", "base"}


def test_vectors_stream_in_chunks_and_bad_files_are_one_line(tmp_path):
    path = tmp_path / "c.db"
    with IndexFile(path, create=True) as index:
        cid = index.open_collection(info())
        index.upsert(cid, [(f"r{i}", np.full(4, i, np.float32), None, b"", {}) for i in range(10)])
        chunks = list(index.vectors(cid, 4, chunk=3))
        assert [len(ids) for ids, _ in chunks] == [3, 3, 3, 1]
        assert np.concatenate([m for _, m in chunks])[:, 0].tolist() == list(range(10))
    (tmp_path / "not.db").write_bytes(b"hello, not sqlite" * 100)
    with pytest.raises(InputError, match="not an index file"):
        IndexFile(tmp_path / "not.db")
    with pytest.raises(InputError, match="no such index file"):
        IndexFile(tmp_path / "missing.db")
