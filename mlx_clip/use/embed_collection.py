"""index: embed every record of a collection into an index file (use/store.py, llm's own schema).

The steps, each checked before the next costs time: the index file opens (an unreadable one is
refused), the model loads, its collection is checked (a model of another family or size is
refused, as is a name llm gives another model), the records are read and the fields the flags
name checked, every record's image is fetched (fetch's rules; a failed one is listed, not
fatal), and only then is anything written: the collection opens, the model is registered for
llm, and only what is new or changed is embedded: a row's
content_hash is a digest of its image's identity and the model's, so a second run embeds
nothing, a changed image or new weights re-embed, and records gone from the records file leave
the collection. Images decode on background threads while the model embeds, and each batch's
vectors are written as they come, so memory holds a few batches, never the whole collection.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import mlx.core as mx
import numpy as np

from ..data.fetch_config import FetchConfig
from ..errors import InputError
from ..folder_lock import hold_folder_lock
from ..io import write_jsonl
from ..models.family import family_of
from ..progress import Progress
from .collection_records import (Entry, EntryFields, collection_manifest, fill_missing_identities, read_entries,
                                 stale_ids)
from ..data.decode_threads import DEFAULT_THREADS, image_pixels, ordered_map
from .index_model import check_llm_name, collection_name, model_identity, register_for_llm, resolve_model
from .record_link import check_link_template
from .store import CollectionInfo, IndexFile

WRITE_CHUNK = 1024  # rows per metadata refresh transaction


@dataclass
class IndexSettings:
    """What index.py was asked (the command's flags)."""

    model: str
    data: Path
    out: Path
    fetch: FetchConfig
    collection: str | None = None
    link_template: str | None = None
    title_field: str | None = None
    label_field: str | None = None
    batch_size: int = 64
    threads: int = DEFAULT_THREADS
    parquet: Path | None = None
    progress: bool = True


@dataclass
class IndexSummary:
    out: Path
    collection: str
    records: int
    embedded: int
    unchanged: int
    removed: int
    failures: list[dict] = field(default_factory=list)
    failures_path: Path | None = None
    embed_seconds: float = 0.0
    seconds: float = 0.0
    parquet: Path | None = None

    def __str__(self) -> str:
        rate = f" ({self.embedded / self.embed_seconds:.1f} images/s)" if self.embedded and self.embed_seconds else ""
        lines = [f"{self.out}: collection {self.collection!r}, {self.records:,} records",
                 f"  embedded   {self.embedded:,}{rate}",
                 f"  unchanged  {self.unchanged:,}",
                 f"  removed    {self.removed:,} (gone from the records)"]
        failed = f"  unreadable {len(self.failures):,}"
        if self.failures:
            failed += f" -> {self.failures_path} (not in the collection; fix them and run again)"
        lines.append(failed)
        if self.parquet:
            lines.append(f"  parquet    {self.parquet}")
        lines.append(f"  time       {self.seconds:.1f} s")
        lines.append(f'  search it: llm similar {self.collection} -d {self.out} -c "a description"')
        return "\n".join(lines)


def check_settings(settings: IndexSettings) -> None:
    if settings.batch_size < 1 or settings.threads < 1:
        raise InputError("--batch-size and --threads must be at least 1")
    if settings.out.suffix.lower() in (".json", ".jsonl", ".csv"):
        raise InputError(f"--out {settings.out}: the index is an SQLite file (e.g. collection.db)")
    if settings.link_template:
        check_link_template(settings.link_template)  # before the model loads and images are fetched
    if settings.parquet is not None:
        from .parquet_export import require_pyarrow

        require_pyarrow()


def build_index(settings: IndexSettings, log: Callable[[str], Any] = print) -> IndexSummary:
    """Run the index; returns its summary (also for `--parquet`)."""
    started = time.perf_counter()
    check_settings(settings)
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    busy = f"{settings.out}: another index.py (pid {{pid}}) is writing to this index file; wait for it to finish"
    with (hold_folder_lock(settings.out.parent, f".{settings.out.name}.lock", busy),  # two at once each embedded all
          IndexFile(settings.out, create=True) as index):
        chosen = resolve_model(settings.model)
        name = collection_name(settings.collection or chosen.default_name)
        model = _load(chosen.source)
        old = index.collections().get(name)
        info = CollectionInfo(
            name=name, model_id=f"mlx-clip/{name}", model_source=chosen.source,
            family=family_of(model).model_type, dimensions=model.config.projection_dim,
            records_source=str(Path(settings.data).resolve()), link_template=settings.link_template,
            label_field=settings.label_field, title_field=settings.title_field,
            created=old[1].created if old else time.time())
        index.check_collection(info)  # a model that would mix vectors, said before any fetch
        check_llm_name(name, chosen.source)  # ... and a name llm gives another model
        fields = EntryFields(settings.title_field, settings.link_template, settings.label_field)
        manifest, fetch_failures = collection_manifest(Path(settings.data), settings.fetch, log, fields.check)
        entries = fill_missing_identities(read_entries(manifest, fields, settings.fetch.id_field))
        cid = index.open_collection(info)  # written only now: a refused run leaves the index as it was
        log(f"collection {name!r} in {settings.out}: {info.family}, {info.dimensions} dimensions, from {chosen.source}")
        register_for_llm(name, chosen.source)
        identity = model_identity(model, chosen.folder)
        hashes = {e.record_id: hashlib.sha256(identity + e.image_identity.encode()).digest() for e in entries}
        stored = index.content_hashes(cid)
        removed = stale_ids(stored, hashes)
        index.delete(cid, removed)
        todo = [e for e in entries if stored.get(e.record_id) != hashes[e.record_id]]
        _refresh_fields(index, cid, [e for e in entries if stored.get(e.record_id) == hashes[e.record_id]])
        if stored:
            log(f"{len(entries) - len(todo):,} of {len(entries):,} records already embedded with this model; "
                f"embedding {len(todo):,}")
        embed_started = time.perf_counter()
        embedded, failures = embed_entries(model, todo, lambda rows, vectors: index.upsert(cid, [
            (e.record_id, v, e.title, hashes[e.record_id], e.metadata) for e, v in zip(rows, vectors)]),
            settings.batch_size, settings.threads, settings.progress, log)
        embed_seconds = time.perf_counter() - embed_started
        index.delete(cid, [f["record_id"] for f in failures if f["record_id"] in stored])  # no stale vector stays
        summary = IndexSummary(settings.out, name, len(entries), embedded, len(entries) - len(todo),
                               len(removed), embed_seconds=embed_seconds)
        summary.failures = _fetch_failures(fetch_failures) + failures
        summary.failures_path = _write_failures(settings.out, name, summary.failures)
        if settings.parquet is not None:
            from .parquet_export import write_parquet

            summary.parquet = write_parquet(index, name, settings.parquet)
    summary.seconds = time.perf_counter() - started
    return summary


def _load(source: str):
    import mlx_clip

    try:
        return mlx_clip.load(source)
    except InputError as err:
        raise InputError(f"--model {source}: cannot load the model: {err}") from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"--model {source}: cannot load the model ({type(err).__name__}: {err})") from None


def embed_entries(model, entries: Sequence[Entry], write: Callable[[list[Entry], np.ndarray], Any],
                  batch_size: int = 64, threads: int = DEFAULT_THREADS, progress: bool = True,
                  log: Callable[[str], Any] = print) -> tuple[int, list[dict]]:
    """Decode on `threads` threads while the model embeds; `write(entries, vectors)` per batch.
    Returns (embedded, failures): an unreadable image is a failure row, never the end of the run."""
    processor = model.image_processor
    bar = Progress(len(entries), "embedding", enabled=progress, say=log)
    failures: list[dict] = []
    rows: list[Entry] = []
    pixels: list[np.ndarray] = []
    embedded = 0

    def flush() -> None:
        nonlocal embedded
        vectors = np.array(model.embed_pixels(np.stack(pixels)).astype(mx.float32))
        if not np.isfinite(vectors).all():
            raise InputError(f"--model {model.config.raw.get('_name_or_path') or 'model'}: gives NaN or infinite "
                             "embeddings (diverged weights); nothing of this batch was written")
        write(rows, vectors)
        embedded += len(rows)
        bar.update(len(rows))
        rows.clear()
        pixels.clear()

    try:
        for entry, result in ordered_map(lambda e: image_pixels(e.image_path, processor), entries, threads,
                                         ahead=2 * batch_size):
            if isinstance(result, Exception):
                failures.append(_failure(entry, result))
                bar.update(1)
                continue
            rows.append(entry)
            pixels.append(result)
            if len(rows) == batch_size:
                flush()
        if rows:
            flush()
    finally:
        bar.close()
    return embedded, failures


def _failure(entry: Entry, err: Exception) -> dict:
    detail = str(err) or type(err).__name__
    reason = "unreadable_image" if isinstance(err, (InputError, OSError)) else type(err).__name__
    return {"record_id": entry.record_id, "image_path": str(entry.image_path), "stage": "embed",
            "reason": reason, "detail": detail}


def _fetch_failures(path: Path | None) -> list[dict]:
    if path is None or not path.is_file():
        return []
    return [{"record_id": str(row.get("id", "")), "stage": "fetch", "reason": row.get("reason", ""),
             "detail": row.get("detail", ""), **({"url": row["url"]} if row.get("url") else {})}
            for row in (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())]


def failures_path(out: Path, collection: str) -> Path:
    """FILE.db -> FILE.NAME.failures.jsonl beside it (one per collection)."""
    return out.with_name(f"{out.stem}.{collection}.failures.jsonl")


def _write_failures(out: Path, collection: str, failures: list[dict]) -> Path | None:
    path = failures_path(out, collection)
    if not failures:
        path.unlink(missing_ok=True)
        return None
    write_jsonl(path, failures)
    return path


def _refresh_fields(index: IndexFile, cid: int, entries: list[Entry]) -> None:
    """Catalogue edits reach rows whose vector stays, without embedding again."""
    for start in range(0, len(entries), WRITE_CHUNK):
        index.update_fields(cid, [(e.record_id, e.title, e.metadata) for e in entries[start:start + WRITE_CHUNK]])


