"""A collection index file: llm's own embeddings schema, so `llm similar NAME -d FILE` reads it,
plus one table of ours saying which model made each collection and from which records.

llm's tables are written exactly as llm's migrations leave them (and the migrations are
recorded as applied), so llm opens the file without changing it. A vector is stored as llm
stores one: little-endian float32, here L2-normalised, so a dot product is the cosine. The
`metadata` column holds the record: every catalogue field, plus `record_id`, `image_path`
(absolute; the search page serves only files named here, looked up by record id) and
`record_url` when the index was given a link template.

Nothing here needs llm or sqlite-utils: the standard library's sqlite3 is enough, and a file
from someone else is read with bounded reads (vectors in chunks, never a whole table at once).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import InputError

LLM_MIGRATION_SET = "llm.embeddings"
LLM_MIGRATIONS = ("m001_create_tables", "m002_foreign_key", "m003_add_updated",
                  "m004_store_content_hash", "m005_add_content_blob")
INFO_TABLE = "mlx_clip_collections"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS "_sqlite_migrations" (
   "id" INTEGER PRIMARY KEY, "migration_set" TEXT, "name" TEXT, "applied_at" TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name");
CREATE TABLE IF NOT EXISTS "collections" ("id" INTEGER PRIMARY KEY, "name" TEXT, "model" TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS "idx_collections_name" ON "collections" ("name");
CREATE TABLE IF NOT EXISTS "embeddings" (
   "collection_id" INTEGER REFERENCES "collections"("id"), "id" TEXT, "embedding" BLOB,
   "content" TEXT, "content_blob" BLOB, "content_hash" BLOB, "metadata" TEXT, "updated" INTEGER,
   PRIMARY KEY ("collection_id", "id"));
CREATE INDEX IF NOT EXISTS "idx_embeddings_content_hash" ON "embeddings" ("content_hash");
CREATE TABLE IF NOT EXISTS "{INFO_TABLE}" (
   "collection_id" INTEGER PRIMARY KEY REFERENCES "collections"("id"), "info" TEXT);
"""


@dataclass(frozen=True)
class CollectionInfo:
    """What made a collection: vectors from two different models must never share one."""

    name: str
    model_id: str
    """The id llm embeds `llm similar` queries with (`mlx-clip/NAME`, registered by index)."""
    model_source: str
    """The model folder (absolute path) or hub repo id the vectors came from."""
    family: str  # "clip" or "siglip"
    dimensions: int
    records_source: str = ""
    link_template: str | None = None
    label_field: str | None = None
    title_field: str | None = None
    created: float = 0.0

    def same_model(self, other: "CollectionInfo") -> bool:
        return (self.model_source, self.family, self.dimensions) == (other.model_source, other.family,
                                                                      other.dimensions)

    @classmethod
    def from_json(cls, text: str, where: str) -> "CollectionInfo":
        try:
            raw = json.loads(text)
            known = {f.name for f in fields(cls)}
            info = cls(**{k: v for k, v in raw.items() if k in known})
        except (ValueError, TypeError) as err:
            raise InputError(f"{where}: unreadable collection info ({err})") from None
        if not isinstance(info.dimensions, int) or not 0 < info.dimensions <= 65536:
            raise InputError(f"{where}: collection {info.name!r} has no valid dimensions")
        return info


def encode_vector(vector: np.ndarray) -> bytes:
    """llm's encoding (llm.encode): little-endian float32."""
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_vectors(blobs: list[bytes], dimensions: int, where: str) -> np.ndarray:
    """Rows of float32; a blob of the wrong length is named, not guessed at."""
    out = np.empty((len(blobs), dimensions), dtype=np.float32)
    for i, blob in enumerate(blobs):
        if blob is None or len(blob) != 4 * dimensions:
            raise InputError(f"{where}: an embedding is {0 if blob is None else len(blob)} bytes, "
                             f"expected {4 * dimensions}")
        out[i] = np.frombuffer(blob, dtype="<f4")
    return out


class IndexFile:
    """One SQLite file holding one or more collections (e.g. base and fine-tuned)."""

    def __init__(self, path: str | Path, create: bool = False):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise InputError(f"{self.path}: no such index file (make one with index.py)")
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            if create:
                self._create()
            else:
                self.db.execute(f'SELECT 1 FROM "{INFO_TABLE}" LIMIT 1')
        except sqlite3.DatabaseError as err:
            raise InputError(f"{self.path}: not an index file made by index.py ({err})") from None

    def _create(self) -> None:
        with self.db:
            self.db.executescript(_SCHEMA)
            now = time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime())
            self.db.executemany('INSERT OR IGNORE INTO "_sqlite_migrations" (migration_set, name, applied_at) '
                                "VALUES (?, ?, ?)", [(LLM_MIGRATION_SET, m, now) for m in LLM_MIGRATIONS])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "IndexFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # collections
    def collections(self) -> dict[str, tuple[int, CollectionInfo]]:
        """name -> (llm's collection id, info), for the collections index.py made."""
        rows = self.db.execute(f'SELECT c.id, c.name, i.info FROM collections c JOIN "{INFO_TABLE}" i '
                               "ON i.collection_id = c.id ORDER BY c.id").fetchall()
        return {name: (cid, CollectionInfo.from_json(info, f"{self.path}: collection {name!r}"))
                for cid, name, info in rows}

    def collection(self, name: str) -> tuple[int, CollectionInfo]:
        found = self.collections()
        if name not in found:
            have = ", ".join(found) or "none"
            raise InputError(f"{self.path}: no collection {name!r} (collections: {have})")
        return found[name]

    def check_collection(self, info: CollectionInfo) -> None:
        """Refuse to add one model's vectors to another's collection, or to take a collection
        another tool made; writes nothing."""
        existing = self.collections().get(info.name)
        if existing:
            old = existing[1]
            if not old.same_model(info):
                raise InputError(
                    f"{self.path}: collection {info.name!r} holds {old.family} vectors of {old.dimensions} "
                    f"dimensions from {old.model_source}; this model ({info.family}, {info.dimensions}, "
                    f"{info.model_source}) would mix vectors: pass another --collection or --out")
        elif self.db.execute("SELECT 1 FROM collections WHERE name = ?", (info.name,)).fetchone():
            raise InputError(f"{self.path}: collection {info.name!r} was made by another tool (llm "
                             "embed-multi?); pass another --collection")

    def open_collection(self, info: CollectionInfo) -> int:
        """The collection's id, creating it (after check_collection)."""
        self.check_collection(info)
        existing = self.collections().get(info.name)
        if existing:
            cid = existing[0]
            with self.db:
                self.db.execute("UPDATE collections SET model = ? WHERE id = ?", (info.model_id, cid))
                self.db.execute(f'UPDATE "{INFO_TABLE}" SET info = ? WHERE collection_id = ?',
                                (json.dumps(asdict(info)), cid))
            return cid
        with self.db:
            cid = self.db.execute("INSERT INTO collections (name, model) VALUES (?, ?)",
                                  (info.name, info.model_id)).lastrowid
            self.db.execute(f'INSERT INTO "{INFO_TABLE}" (collection_id, info) VALUES (?, ?)',
                            (cid, json.dumps(asdict(info))))
        return cid

    # rows
    def content_hashes(self, collection_id: int) -> dict[str, bytes]:
        """id -> content_hash: what a re-run compares to embed only what is new or changed."""
        return dict(self.db.execute("SELECT id, content_hash FROM embeddings WHERE collection_id = ?",
                                    (collection_id,)))

    def upsert(self, collection_id: int, rows: Iterable[tuple[str, np.ndarray, str | None, bytes, dict]]) -> int:
        """Write (record_id, vector, content, content_hash, metadata) rows in one transaction."""
        now = int(time.time())
        batch = [(collection_id, rid, encode_vector(vec), content, digest,
                  json.dumps(meta, ensure_ascii=False, default=str), now)
                 for rid, vec, content, digest, meta in rows]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO embeddings (collection_id, id, embedding, content, "
                                "content_hash, metadata, updated) VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        return len(batch)

    def update_fields(self, collection_id: int, rows: Iterable[tuple[str, str | None, dict]]) -> None:
        """Rewrite (record_id, content, metadata) of rows whose vector stays (a catalogue field edited)."""
        batch = [(content, json.dumps(meta, ensure_ascii=False, default=str), collection_id, rid)
                 for rid, content, meta in rows]
        with self.db:
            self.db.executemany("UPDATE embeddings SET content = ?, metadata = ? WHERE collection_id = ? AND id = ?",
                                batch)

    def delete(self, collection_id: int, record_ids: Iterable[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM embeddings WHERE collection_id = ? AND id = ?",
                                [(collection_id, rid) for rid in record_ids])

    def count(self, collection_id: int) -> int:
        return self.db.execute("SELECT count(*) FROM embeddings WHERE collection_id = ?",
                               (collection_id,)).fetchone()[0]

    def vectors(self, collection_id: int, dimensions: int, chunk: int = 4096) -> Iterator[tuple[list[str], np.ndarray]]:
        """(record ids, float32 matrix) in chunks of `chunk` rows, in a stable order."""
        cursor = self.db.execute("SELECT id, embedding FROM embeddings WHERE collection_id = ? ORDER BY rowid",
                                 (collection_id,))
        where = f"{self.path}: collection {collection_id}"
        while rows := cursor.fetchmany(chunk):
            yield [r[0] for r in rows], decode_vectors([r[1] for r in rows], dimensions, where)

    def metadata(self, collection_id: int, record_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT metadata FROM embeddings WHERE collection_id = ? AND id = ?",
                              (collection_id, record_id)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0]) if row[0] else {}
        except ValueError:
            raise InputError(f"{self.path}: record {record_id!r}: metadata is not JSON") from None
        return value if isinstance(value, dict) else {}

    def metadata_rows(self, collection_id: int, chunk: int = 4096) -> Iterator[tuple[str, dict[str, Any]]]:
        """(record id, metadata) for every row, streamed."""
        cursor = self.db.execute("SELECT id, metadata FROM embeddings WHERE collection_id = ? ORDER BY rowid",
                                 (collection_id,))
        while rows := cursor.fetchmany(chunk):
            for rid, text in rows:
                try:
                    value = json.loads(text) if text else {}
                except ValueError:
                    value = {}
                yield rid, value if isinstance(value, dict) else {}

