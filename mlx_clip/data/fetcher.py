"""Fetch the images of a sample of records into a clean manifest (asyncio + aiohttp).

``fetch_records(records_path, FetchConfig(out="data"), sample=1566)`` writes:

- ``data/images/ab/abcdef....jpg``: one file per record, named from the SHA-1 of the record's
  id and URL (of the URL alone when the record has no id), with the extension of the format
  Pillow detects, never the remote file name. Records that share a URL share one download;
  each record whose id differs gets its own copy of the file.
- ``data/manifest.jsonl``: one line per usable record, in the sample's order: the record's own
  fields plus ``record_id`` (:func:`~mlx_clip.data.records.record_id`), ``image_path``
  (relative to the manifest's folder), ``sha256``, ``width`` and ``height`` of the image (a record's own field of one of these names is kept as
  ``record_<name>``).
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
import fcntl
import os
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
from tqdm import tqdm

from ..cli_args import encoding_name, positive_int, positive_seconds, setting
from ..errors import InputError
from ..io import write_bytes, write_jsonl
from .download import DownloadFailure, Downloader, IPAddress, is_private_address
from .image_files import (
    ImageInfo,
    ImageProblem,
    find_image_file,
    image_file,
    inspect_image,
    remove_partial_files,
    sha256_hex,
)
from .records import MANIFEST_ID, MISSING, Records, get_field, has_own_id, load_records, record_id
from .sampling import choose_sample
from .url_field import detect_url_field

__all__ = [
    "USER_AGENT",
    "MANIFEST_NAME",
    "FAILURES_NAME",
    "MANIFEST_KEYS",
    "FetchConfig",
    "FetchSummary",
    "fetch_records",
    "fetch_records_async",
    "lock_output_folder",
]

USER_AGENT = "mlx-clip-finetune/0.1 (+https://github.com/mlx-clip-finetune/mlx-clip-finetune)"
MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.jsonl"
IMAGES_DIR = "images"
LOCK_NAME = ".fetch.lock"
MANIFEST_KEYS = (MANIFEST_ID, "image_path", "sha256", "width", "height")
"""Keys ``fetch`` adds to each record in the manifest (``record_id``: the id
:func:`~mlx_clip.data.records.record_id` gave it, which also names its image file).

A record's own value under one of these keys (say a museum object's ``width`` in cm) is kept
under ``record_<key>`` (``record_width``); a local ``image_path`` read with ``--path-field
image_path`` is simply rewritten relative to the manifest.
"""


RECORDS_GROUP = "records and sample"  # the argument group of the fields that read the records


@dataclass
class FetchConfig:
    """Where to put the images and how to fetch them (fetch.py's and finetune.py's download flags)."""

    out: Path | str = setting(Path("data"), "output folder for manifest.jsonl, failures.jsonl and images/",
                              metavar="DIR")
    url_field: str | None = setting(
        None, "field holding each record's image URL; a dotted path reaches nested fields "
        "(media.0.url). Default: detected (image_url, primaryImage, url, IIIF links, ...)",
        metavar="FIELD", group=RECORDS_GROUP)
    path_field: str | None = setting(
        None, "field holding a local image path, relative to the records file; such images are "
        "checked and kept without downloading", metavar="FIELD", group=RECORDS_GROUP)
    encoding: str | None = setting(
        None, "text encoding of the records file, e.g. cp1252 for a CSV saved by Excel on Windows "
        "(default: UTF-8, with or without a byte-order mark)", type=encoding_name, metavar="NAME",
        group=RECORDS_GROUP)
    id_field: str | None = setting(
        None, "field holding each record's identifier (names its image file and its failure "
        "line). Default: an id-like field (id, identifier, objectID) if present", metavar="FIELD",
        group=RECORDS_GROUP)
    concurrency: int = setting(16, "requests in flight overall", type=positive_int, metavar="N")
    per_host: int = setting(4, "requests in flight per host", type=positive_int, metavar="N")
    connect_timeout: float | None = setting(None, "seconds to open a connection; None: a third of "
                                            "read_timeout, at most 10 s", cli=False)
    read_timeout: float = setting(
        30.0, "give up on a request after this long without data; connecting gets a third "
        "of it, at most 10 s", flag="--timeout", metavar="SECONDS", check=positive_seconds)
    deadline: float = setting(
        120.0, "give up on an image this long after its first request, retries included, "
        "however steadily a slow server trickles bytes", metavar="SECONDS", check=positive_seconds)
    retries: int = setting(
        4, "further tries after timeouts, connection errors, HTTP 5xx and 429, with "
        "exponential backoff and Retry-After honoured", metavar="N", from_cli=lambda n: max(0, n))
    backoff: float = setting(0.5, "first retry waits about this long; doubles each time (with jitter)", cli=False)
    max_backoff: float = setting(30.0, cli=False)
    max_retry_after: float = setting(60.0, "cap on a server's Retry-After", cli=False)
    max_bytes: int = setting(50_000_000, "largest image to accept, in bytes", type=positive_int, metavar="N")
    max_redirects: int = setting(10, cli=False)
    user_agent: str = setting(USER_AGENT, cli=False, save=False)
    progress: bool = setting(True, "do not show the progress bar", flag="--no-progress")
    allow_private: bool = setting(
        False, "follow redirects from public hosts to loopback, link-local and private "
        "addresses (refused by default as redirect_private; records pointing at such an "
        "address directly are always fetched)")
    # What counts as private; the tests swap it to play a public host on 127.0.0.1.
    private_address: Callable[[IPAddress], bool] = setting(is_private_address, cli=False, save=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("connect_timeout", "read_timeout", "deadline"):
            value = getattr(self, name)
            if not (value is None and name == "connect_timeout") and not value > 0:
                raise ValueError(f"{name} must be more than 0 seconds")
        if self.concurrency < 1 or self.per_host < 1:
            raise ValueError("concurrency and per_host must be at least 1")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")

    @property
    def connect_seconds(self) -> float:
        """connect_timeout, or a third of read_timeout (at most 10 s): a dead host fails fast."""
        return self.connect_timeout if self.connect_timeout is not None else min(10.0, self.read_timeout / 3)


@dataclass
class FetchSummary:
    """What a fetch run did; ``str()`` gives the closing report."""

    records: int  # records in the file
    sampled: int  # records in the sample
    fetched: int  # records whose image was downloaded in this run
    already_present: int  # records whose image an earlier run had fetched
    local: int  # records whose image was a local file (path_field)
    failed: dict[str, int]  # failure reason -> records
    downloads: int  # response bodies downloaded (shared URLs count once)
    seconds: float
    manifest_path: Path
    failures_path: Path
    sample_explanation: str = ""
    removed_partial_files: int = 0

    @property
    def usable(self) -> int:
        return self.fetched + self.already_present + self.local

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def images_per_second(self) -> float:
        return self.fetched / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.usable:,} of {self.sampled:,} records usable -> {self.manifest_path}",
            f"  fetched          {self.fetched:,} ({self.downloads:,} downloads)",
            f"  already present  {self.already_present:,}",
        ]
        if self.local:
            lines.append(f"  local files      {self.local:,}")
        lines.append(f"  failed           {self.failed_total:,}" + (
            f" -> {self.failures_path}" if self.failed_total else ""))
        for reason, count in sorted(self.failed.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {reason:<16} {count:,}")
        rate = f", {self.images_per_second:.1f} images/s fetched" if self.fetched else ""
        lines.append(f"  time             {self.seconds:.1f} s{rate}")
        return "\n".join(lines)


@dataclass
class _Job:
    """One sampled record and where its image comes from."""

    position: int  # place in the sample
    index: int  # place in the records file
    record: dict
    record_id: str
    url: str | None = None
    local_path: Path | None = None
    key: str = ""  # what the image file name is hashed from


@dataclass
class _Outcome:
    job: _Job
    status: str  # "fetched", "already_present", "local" or "failed"
    entry: dict


def fetch_records(
    records_path: str | os.PathLike,
    config: FetchConfig | None = None,
    *,
    sample: int | None = None,
    margin: float | str | None = None,
    stratify: str | None = None,
    seed: int = 0,
    log: Callable[[str], Any] | None = None,
) -> FetchSummary:
    """Sample the records in ``records_path``, fetch their images, write the manifest.

    Synchronous wrapper around :func:`fetch_records_async`. ``log`` receives progress lines
    (how the sample was chosen); the closing summary is returned, not printed.
    """
    return asyncio.run(
        fetch_records_async(
            records_path, config, sample=sample, margin=margin, stratify=stratify, seed=seed,
            log=log,
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
) -> FetchSummary:
    """Async form of :func:`fetch_records`."""
    config = config or FetchConfig()
    started = time.perf_counter()
    out = Path(config.out)
    for written in (MANIFEST_NAME, FAILURES_NAME):
        if Path(records_path).resolve() == (out / written).resolve():
            raise InputError(f"{records_path}: is the {written} this run would write; "
                             "pass another --out to draw a sample from it")
    records = load_records(records_path, config.encoding)
    url_field = _check_fields(records, config)
    try:
        indices, explanation = choose_sample(records.records, sample, margin, stratify, seed)
    except ValueError as e:
        raise InputError(f"{records.path}: {e}") from None
    if log:
        log(explanation)
    jobs = _plan_jobs(records, indices, config, url_field)

    images_dir = out / IMAGES_DIR
    out.mkdir(parents=True, exist_ok=True)
    with lock_output_folder(out):
        removed = remove_partial_files(images_dir)
        for stale in out.glob("*.jsonl.*.part"):
            stale.unlink()
            removed += 1

        fetch = _Fetcher(config, out.resolve(), images_dir)
        outcomes = await fetch.run(jobs)

        outcomes.sort(key=lambda o: o.job.position)
        manifest = [o.entry for o in outcomes if o.status != "failed"]
        failures = [o.entry for o in outcomes if o.status == "failed"]
        manifest_path, failures_path = out / MANIFEST_NAME, out / FAILURES_NAME
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
    )


@contextmanager
def lock_output_folder(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (``out/.fetch.lock``, holding our pid) while fetching.

    Two runs on one folder would delete each other's ``*.part`` files and interleave the
    manifest; the second one gets an :class:`InputError` naming the pid that holds the lock.
    The kernel drops the lock when the process ends, however it ends.
    """
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise InputError(
                f"{out}: another fetch (pid {holder}) is writing to this folder; "
                "wait for it to finish or pass another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


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
    records: Records, indices: list[int], config: FetchConfig, url_field: str | None
) -> list[_Job]:
    """One job per sampled record: its id, and its URL or local path."""
    base = records.path.resolve().parent
    jobs = []
    for position, index in enumerate(indices):
        record = records.records[index]
        try:
            rid = record_id(record, config.id_field, index)
        except KeyError:
            raise InputError(
                f"{records.where(index)}: field '{config.id_field}' is missing or empty"
            ) from None
        job = _Job(position=position, index=index, record=record, record_id=rid)
        path_value = get_field(record, config.path_field, None) if config.path_field else None
        url_value = get_field(record, url_field, None) if url_field else None
        if path_value not in (None, ""):
            job.local_path = base / str(path_value)
        elif url_value not in (None, ""):
            job.url = str(url_value).strip()
            own_id = config.id_field is not None or has_own_id(rid)
            job.key = f"{rid}\n{job.url}" if own_id else job.url
        jobs.append(job)
    return jobs


class _Fetcher:
    """Runs the jobs: local files checked, shared URLs downloaded once, files written."""

    def __init__(self, config: FetchConfig, out: Path, images_dir: Path):
        self.config = config
        self.out = out
        self.images_dir = images_dir
        self.downloader: Downloader | None = None
        self._progress: tqdm | None = None

    @property
    def downloads(self) -> int:
        """Response bodies downloaded in this run (shared URLs count once)."""
        return self.downloader.downloads if self.downloader is not None else 0

    async def run(self, jobs: list[_Job]) -> list[_Outcome]:
        by_url: dict[str, list[_Job]] = defaultdict(list)
        tasks = []
        outcomes: list[_Outcome] = []
        for job in jobs:
            if job.local_path is not None:
                tasks.append(self._isolated([job], self._local(job)))
            elif job.url is None:
                only_paths = self.config.path_field and not self.config.url_field
                reason = "missing_file" if only_paths else "missing_url"
                outcomes.append(self._failed(job, reason, "the record has no image URL or path"))
            else:
                by_url[job.url].append(job)
        c = self.config
        connector = aiohttp.TCPConnector(limit=c.concurrency, limit_per_host=c.per_host)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=c.connect_seconds, sock_read=c.read_timeout
        )
        show = c.progress and sys.stderr.isatty()
        with tqdm(total=len(jobs), unit="img", disable=not show, desc="fetch") as progress:
            self._progress = progress
            progress.update(len(outcomes))
            async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, headers={"User-Agent": c.user_agent}
            ) as session:
                self.downloader = Downloader(c, session)
                tasks.extend(
                    self._isolated(group, self._url_group(url, group))
                    for url, group in by_url.items()
                )
                for group_outcomes in await asyncio.gather(*tasks):
                    outcomes.extend(group_outcomes)
        return outcomes

    async def _isolated(self, jobs: list[_Job], work: Any) -> list[_Outcome]:
        """``work``'s outcomes; any exception it raises fails ``jobs`` instead of the run."""
        try:
            return await work
        except Exception as e:
            reason = "file_error" if isinstance(e, OSError) else "error"
            detail = f"{type(e).__name__}: {e}"[:200]
            return self._done([self._failed(job, reason, detail) for job in jobs])

    # -- outcomes -----------------------------------------------------------------------

    def _done(self, outcomes: list[_Outcome]) -> list[_Outcome]:
        if self._progress is not None:
            self._progress.update(len(outcomes))
        return outcomes

    def _failed(self, job: _Job, reason: str, detail: str) -> _Outcome:
        entry: dict[str, Any] = {"id": job.record_id, "record_index": job.index}
        if job.local_path is not None:
            entry["path"] = str(job.local_path)
        else:
            entry["url"] = job.url
        entry.update(reason=reason, detail=detail)
        return _Outcome(job, "failed", entry)

    def _usable(self, job: _Job, status: str, path: Path, info: ImageInfo, sha: str) -> _Outcome:
        added = {
            MANIFEST_ID: job.record_id,
            "image_path": Path(os.path.relpath(path.resolve(), self.out)).as_posix(),
            "sha256": sha,
            "width": info.width,
            "height": info.height,
        }
        entry = {}
        for key, value in job.record.items():
            if key in added and not (key == "image_path" and job.local_path is not None):
                entry[f"record_{key}"] = value
            else:
                entry[key] = value
        entry.update(added)
        return _Outcome(job, status, entry)

    # -- local files --------------------------------------------------------------------

    async def _local(self, job: _Job) -> list[_Outcome]:
        assert job.local_path is not None
        try:
            data = await asyncio.to_thread(job.local_path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return self._done([self._failed(job, "missing_file", "no such file")])
        except OSError as e:
            return self._done([self._failed(job, "missing_file", e.strerror or str(e))])
        try:
            info = await asyncio.to_thread(inspect_image, data)
        except ImageProblem as e:
            return self._done([self._failed(job, e.reason, e.detail)])
        return self._done([self._usable(job, "local", job.local_path, info, sha256_hex(data))])

    # -- downloads ----------------------------------------------------------------------

    async def _url_group(self, url: str, jobs: list[_Job]) -> list[_Outcome]:
        """All records sharing ``url``: reuse finished files, download once if needed."""
        outcomes: list[_Outcome] = []
        by_key: dict[str, list[_Job]] = defaultdict(list)
        for job in jobs:
            by_key[job.key].append(job)
        missing: dict[str, list[_Job]] = {}
        data: bytes | None = None
        info: ImageInfo | None = None
        for key, key_jobs in by_key.items():
            found = await asyncio.to_thread(self._existing, key)
            if found is None:
                missing[key] = key_jobs
                continue
            path, found_data, info = found
            data = found_data
            sha = sha256_hex(found_data)
            outcomes.extend(self._usable(j, "already_present", path, info, sha) for j in key_jobs)
        if missing:
            if data is None:  # no finished copy from another record: download
                try:
                    assert self.downloader is not None
                    data = await self.downloader.download(url)
                    info = await asyncio.to_thread(inspect_image, data)
                except (DownloadFailure, ImageProblem) as e:
                    failed = [self._failed(j, e.reason, e.detail) for js in missing.values() for j in js]
                    return self._done(outcomes + failed)
            assert info is not None
            sha = sha256_hex(data)
            for key, key_jobs in missing.items():
                path = image_file(self.images_dir, key, info.extension)
                path.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(write_bytes, path, data)
                # A copy made from another record's finished file counts as fetched in this run.
                outcomes.extend(self._usable(j, "fetched", path, info, sha) for j in key_jobs)
        return self._done(outcomes)

    def _existing(self, key: str) -> tuple[Path, bytes, ImageInfo] | None:
        """A valid file an earlier run wrote for ``key``; an invalid one is removed."""
        path = find_image_file(self.images_dir, key)
        if path is None:
            return None
        data = path.read_bytes()
        try:
            info = inspect_image(data)
        except ImageProblem:
            path.unlink()
            return None
        if path.suffix != "." + info.extension:
            path.unlink()
            return None
        return path, data, info
