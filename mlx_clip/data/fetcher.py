"""Fetch the images of a sample of records into a clean manifest (asyncio + aiohttp).

``fetch_records(records_path, FetchConfig(out="data"), sample=1566)`` writes:

- ``data/images/ab/abcdef....jpg``: one file per record, named from the SHA-1 of the record's
  id and URL (of the URL alone when the record has no id), with the extension of the format
  Pillow detects, never the remote file name. Records that share a URL share one download;
  each record whose id differs gets its own copy of the file. An image whose longest side is
  over ``max_side`` (default 512) is stored as a resized copy (:mod:`.stored_copy`), the file
  training reads; with ``keep_originals`` the original goes to ``data/originals/ab/...``.
  A local image (``path_field``) stays where it is and is read there, unless it is larger than
  ``max_side``: then its resized copy is stored here, named from the id and the file's path
  (:mod:`.local_images`).
- ``data/manifest.jsonl``: one line per usable record, in the sample's order: the record's own
  fields plus ``record_id`` (:func:`~mlx_clip.data.records.record_id`), ``image_path``
  (relative to the manifest's folder), ``sha256`` of the original image, ``width`` and ``height`` of the stored file,
  ``original_width`` and ``original_height`` (and ``original_path``: the kept original with
  ``keep_originals``, or the local file a copy was made from); a record's own field of one of
  these names is kept as ``record_<name>``.
- ``data/failures.jsonl``: one line per unusable record: ``id``, ``record_index``, ``url`` (or
  ``path``), ``reason`` (a short stable code such as ``http_404`` or ``truncated_image``) and
  ``detail``.

Files are written atomically with the umask's permissions, stale ``*.part`` files are removed
at start, and a second run keeps every valid file already there, so an interrupted run resumes
where it stopped. ``OUT/.fetch.lock`` (holding the pid) keeps a second run off the same folder.

One record never stops the run: whatever goes wrong with it (a host name that cannot be
encoded, a header that cannot be parsed, a Pillow plugin raising on damaged bytes) becomes its
line in ``failures.jsonl``. A request is bounded both by idle time (``read_timeout``) and by a
total ``deadline`` per image, and a redirect from a public host to a loopback, link-local or
private address is refused (``redirect_private``) unless ``allow_private``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InputError
from ..folder_lock import hold_folder_lock
from ..io import write_jsonl
from .image_files import remove_partial_files
from .record_ids import choose_id_field, has_own_id
from .records import MISSING, Records, get_field, load_records
from .sampling import choose_sample
from .url_field import detect_url_field
from .fetch_config import IMAGES_DIR, LOCK_NAME, ORIGINALS_DIR, FetchConfig, FetchSummary
from .fetch_jobs import Job, JobRunner

__all__ = ["fetch_records", "fetch_records_async", "lock_output_folder"]


def fetch_records(
    records_path: str | os.PathLike,
    config: FetchConfig | None = None,
    *,
    sample: int | None = None,
    margin: float | str | None = None,
    stratify: str | None = None,
    seed: int = 0,
    log: Callable[[str], Any] | None = None,
    loaded: Records | None = None,
) -> FetchSummary:
    """Sample the records in ``records_path``, fetch their images, write the manifest.

    Synchronous wrapper around :func:`fetch_records_async`. ``log`` receives progress lines
    (how the sample was chosen); the closing summary is returned, not printed. ``loaded``:
    ``records_path`` as a caller already read it (finetune.py checks the records first), so a
    large file is not parsed twice.
    """
    return asyncio.run(
        fetch_records_async(
            records_path, config, sample=sample, margin=margin, stratify=stratify, seed=seed,
            log=log, loaded=loaded,
        )
    )


async def fetch_records_async(
    records_path: str | os.PathLike,
    config: FetchConfig | None = None,
    *,
    sample: int | None = None,
    margin: float | str | None = None,
    stratify: str | None = None,
    seed: int = 0,
    log: Callable[[str], Any] | None = None,
    loaded: Records | None = None,
) -> FetchSummary:
    """Async form of :func:`fetch_records`."""
    config = config or FetchConfig()
    started = time.perf_counter()
    out = Path(config.out)
    for written in config.list_paths():
        if Path(records_path).resolve() == written.resolve():
            raise InputError(f"{records_path}: is the {written.name} this run would write; "
                             "pass another --out to draw a sample from it")
    records = load_records(records_path, config.encoding) if loaded is None else loaded
    url_field = _check_fields(records, config)
    id_field, ids, said = choose_id_field(records, config.id_field)  # one id per record, or their positions
    if said and log:
        log(said)
    config = replace(config, id_field=id_field)
    try:
        indices, explanation = choose_sample(records.records, sample, margin, stratify, seed)
    except ValueError as e:
        raise InputError(f"{records.path}: {e}") from None
    if log:
        log(explanation)
    jobs = _plan_jobs(records, indices, ids, config, url_field)

    images_dir = out / IMAGES_DIR
    out.mkdir(parents=True, exist_ok=True)
    with lock_output_folder(out):
        removed = remove_partial_files(images_dir) + remove_partial_files(out / ORIGINALS_DIR)
        for stale in out.glob("*.jsonl.*.part"):
            stale.unlink()
            removed += 1

        fetch = JobRunner(config, out.resolve(), images_dir)
        outcomes = await fetch.run(jobs)

        outcomes.sort(key=lambda o: o.job.position)
        manifest = [o.entry for o in outcomes if o.status != "failed"]
        failures = [o.entry for o in outcomes if o.status == "failed"]
        manifest_path, failures_path = config.list_paths()
        write_jsonl(manifest_path, manifest)
        write_jsonl(failures_path, failures)
    counts = Counter(o.status for o in outcomes)
    return FetchSummary(
        records=len(records.records),
        sampled=len(jobs),
        fetched=counts["fetched"],
        already_present=counts["already_present"],
        local=counts["local"],
        failed=dict(Counter(f["reason"] for f in failures)),
        downloads=fetch.downloads,
        seconds=time.perf_counter() - started,
        manifest_path=manifest_path,
        failures_path=failures_path,
        sample_explanation=explanation,
        removed_partial_files=removed,
        max_side=config.max_side,
        resized=sum(1 for o in outcomes if o.stored is not None and o.stored.resized and o.status != "local"),
        local_copies=sum(1 for o in outcomes if o.local_copy),
        local_copies_made=fetch.counts.local_copies_made,
        resized_on_disk=fetch.counts.resized_on_disk,
        downloaded_again=fetch.counts.downloaded_again,
        kept_smaller=fetch.counts.kept_smaller,
        originals_dir=out / ORIGINALS_DIR if config.keep_originals else None,
    )


@contextmanager
def lock_output_folder(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (``out/.fetch.lock``, holding our pid) while fetching.

    Two runs on one folder would delete each other's ``*.part`` files and interleave the
    manifest; the second one gets an :class:`InputError` naming the pid that holds the lock
    (mlx_clip.folder_lock, which a run folder's lock shares).
    """
    with hold_folder_lock(out, LOCK_NAME, f"{out}: another fetch (pid {{pid}}) is writing to this folder; "
                                          "wait for it to finish or pass another --out"):
        yield


def _check_fields(records: Records, config: FetchConfig) -> str | None:
    """The URL field (named or detected); InputError for any record missing a named field.

    Every record is checked, not only the sampled ones, so the error does not depend on the
    seed. A record may have an empty or null value (it becomes a ``missing_url`` failure), but
    not lack the field. With both a path field and a URL field, either may be absent.
    """
    url_field = config.url_field
    if url_field is None and config.path_field is None:
        url_field = detect_url_field(records.records, str(records.path))
    if config.path_field and url_field:
        return url_field
    needed = config.path_field or url_field
    assert needed is not None
    for index, record in enumerate(records.records):
        if get_field(record, needed, MISSING) is MISSING:
            raise InputError(f"{records.where(index)}: field '{needed}' is missing")
    return url_field


def _plan_jobs(
    records: Records, indices: list[int], ids: list[str | None], config: FetchConfig, url_field: str | None
) -> list[Job]:
    """One job per sampled record: its id (`ids`, choose_id_field's), and its URL or local path."""
    base = records.path.resolve().parent
    jobs = []
    for position, index in enumerate(indices):
        record, rid = records.records[index], ids[index]
        if rid is None:
            raise InputError(f"{records.where(index)}: field '{config.id_field}' is missing or empty")
        job = Job(position=position, index=index, record=record, record_id=rid)
        path_value = get_field(record, config.path_field, None) if config.path_field else None
        url_value = get_field(record, url_field, None) if url_field else None
        if path_value not in (None, ""):
            job.local_path = base / str(path_value)
            job.records_dir = base
            source = str(job.local_path)  # names the resized copy of a large local image
        elif url_value not in (None, ""):
            job.url = source = str(url_value).strip()
        else:
            jobs.append(job)
            continue
        own_id = config.id_field is not None or has_own_id(rid)
        job.key = f"{rid}\n{source}" if own_id else source
        jobs.append(job)
    return jobs
