"""The jobs of a fetch run (one per sampled record) and the runner that carries them out: local
files checked (and copied resized when large), shared URLs downloaded once, image files written;
each job ends as one Outcome."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from .download import DownloadFailure, Downloader, open_downloader
from .image_files import ImageInfo, ImageProblem, inspect_image
from .image_store import Existing, ImageStore, Stored
from .local_images import settle_local
from .record_ids import MANIFEST_ID
from ..progress import Progress
from .fetch_config import ORIGINALS_DIR, FetchConfig


@dataclass
class Job:
    """One sampled record and where its image comes from."""

    position: int  # place in the sample
    index: int  # place in the records file
    record: dict
    record_id: str
    url: str | None = None
    local_path: Path | None = None
    records_dir: Path | None = None  # what a local record's paths are relative to (the records file's folder)
    key: str = ""  # what the image file name is hashed from (a local file's too: its copy's)


@dataclass
class Outcome:
    job: Job
    status: str  # "fetched", "already_present", "local" or "failed"
    entry: dict
    stored: Stored | None = None  # the file the manifest line points at

    @property
    def local_copy(self) -> bool:
        """A local file read through a resized copy in the images folder."""
        return self.status == "local" and self.stored is not None and self.stored.original_path is not None


@dataclass
class StoreCounts:
    """What this run did to files an earlier run stored (for the closing summary)."""

    resized_on_disk: int = 0  # stored again at this run's --max-side from files already on disk
    downloaded_again: int = 0  # originals downloaded again: a stored copy was smaller than wanted
    kept_smaller: int = 0  # ... and the download failed, so the smaller copy stays
    local_copies_made: int = 0  # resized copies of local files written in this run


class JobRunner:
    """Runs the jobs: local files checked, shared URLs downloaded once, files written."""

    def __init__(self, config: FetchConfig, out: Path, images_dir: Path):
        self.config = config
        self.out = out
        self.images_dir = images_dir
        self.store = ImageStore(images_dir, out / ORIGINALS_DIR, config.max_side, config.keep_originals)
        self.counts = StoreCounts()
        self.downloader: Downloader | None = None
        self._progress: Progress | None = None

    @property
    def downloads(self) -> int:
        """Response bodies downloaded in this run (shared URLs count once)."""
        return self.downloader.downloads if self.downloader is not None else 0

    async def run(self, jobs: list[Job]) -> list[Outcome]:
        by_url: dict[str, list[Job]] = defaultdict(list)
        by_file: dict[Path, list[Job]] = defaultdict(list)
        outcomes: list[Outcome] = []
        for job in jobs:
            if job.local_path is not None:
                by_file[job.local_path].append(job)
            elif job.url is None:
                only_paths = self.config.path_field and not self.config.url_field
                reason = "missing_file" if only_paths else "missing_url"
                outcomes.append(self._failed(job, reason, "the record has no image URL or path"))
            else:
                by_url[job.url].append(job)
        tasks = [self._isolated(group, self._local_file(path, group)) for path, group in by_file.items()]
        with Progress(len(jobs), "fetch", "records", enabled=self.config.progress) as progress:
            self._progress = progress
            progress.update(len(outcomes))
            async with open_downloader(self.config) as downloader:
                self.downloader = downloader
                tasks.extend(
                    self._isolated(group, self._url_group(url, group))
                    for url, group in by_url.items()
                )
                for group_outcomes in await asyncio.gather(*tasks):
                    outcomes.extend(group_outcomes)
        return outcomes

    async def _isolated(self, jobs: list[Job], work: Any) -> list[Outcome]:
        """``work``'s outcomes; any exception it raises fails ``jobs`` instead of the run."""
        try:
            return await work
        except Exception as e:
            reason = "file_error" if isinstance(e, OSError) else "error"
            detail = f"{type(e).__name__}: {e}"[:200]
            return self._done([self._failed(job, reason, detail) for job in jobs])

    # -- outcomes -----------------------------------------------------------------------

    def _done(self, outcomes: list[Outcome]) -> list[Outcome]:
        if self._progress is not None:
            self._progress.update(len(outcomes))
        return outcomes

    def _failed(self, job: Job, reason: str, detail: str) -> Outcome:
        entry: dict[str, Any] = {"id": job.record_id, "record_index": job.index}
        if job.local_path is not None:
            entry["path"] = str(job.local_path)
        else:
            entry["url"] = job.url
        entry.update(reason=reason, detail=detail)
        return Outcome(job, "failed", entry)

    def _usable(self, job: Job, status: str, stored: Stored) -> Outcome:
        added: dict[str, Any] = {
            MANIFEST_ID: job.record_id,
            "image_path": self._relative(stored.path),
            "sha256": stored.original.sha256,  # the original's: duplicates group, a re-fetch is recognised
            "width": stored.width,
            "height": stored.height,
            "original_width": stored.original.width,
            "original_height": stored.original.height,
        }
        if stored.original_path is not None:
            added["original_path"] = self._relative(stored.original_path)
        entry = {}
        for key, value in job.record.items():
            kept_aside = key in added and not (key == "image_path" and job.local_path is not None)
            entry[f"record_{key}" if kept_aside else key] = self._rebased(job, key, value)
        entry.update(added)
        return Outcome(job, status, entry, stored)

    def _relative(self, path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), self.out)).as_posix()

    def _rebased(self, job: Job, key: str, value: Any) -> Any:
        """A manifest sampled again names its kept originals relative to itself: such an
        ``original_path`` that names a file is rewritten relative to this run's manifest (any other
        value, or a record read from a URL, is kept as it is)."""
        if key != "original_path" or job.records_dir is None or not isinstance(value, str) or not value:
            return value
        path = job.records_dir / value
        return self._relative(path) if path.is_file() else value

    # -- local files --------------------------------------------------------------------

    async def _local_file(self, path: Path, jobs: list[Job]) -> list[Outcome]:
        """All records naming the local file ``path``: read, checked and, when large, copied
        resized, in one call on the thread pool (so at most its workers hold a file's bytes)."""
        keys = list(dict.fromkeys(job.key for job in jobs))
        try:
            local = await asyncio.to_thread(settle_local, self.store, path, keys, self.config.deadline)
        except ImageProblem as e:
            return self._done([self._failed(job, e.reason, e.detail) for job in jobs])
        self.counts.local_copies_made += local.made
        return self._done([self._usable(job, "local", local.stored[job.key]) for job in jobs])

    # -- downloads ----------------------------------------------------------------------

    async def _url_group(self, url: str, jobs: list[Job]) -> list[Outcome]:
        """All records sharing ``url``: settle files an earlier run stored, download once if needed."""
        outcomes: list[Outcome] = []
        by_key: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            by_key[job.key].append(job)
        missing: dict[str, list[Job]] = {}
        smaller: dict[str, Stored] = {}  # stored copies smaller than wanted, kept if the download fails
        data: bytes | None = None  # the original's bytes, when at hand
        info: ImageInfo | None = None
        present: Stored | None = None  # a file stored right for this run, for other keys of the URL
        for key, key_jobs in by_key.items():
            existing: Existing | None = await asyncio.to_thread(self.store.lookup, key)
            if existing is None:
                missing[key] = key_jobs
                continue
            if existing.original_data is not None:
                data, info = existing.original_data, existing.original_info
            stored, rewritten = await asyncio.to_thread(self.store.settle, key, existing)
            if stored is None:
                missing[key], smaller[key] = key_jobs, existing.stored
                continue
            self.counts.resized_on_disk += rewritten
            present = stored
            outcomes.extend(self._usable(j, "already_present", stored) for j in key_jobs)
        if missing:
            if data is None and (present is None or self.config.keep_originals):  # download
                try:
                    assert self.downloader is not None
                    data = await self.downloader.download(url)
                    info = await asyncio.to_thread(inspect_image, data)
                except (DownloadFailure, ImageProblem) as e:
                    self.counts.kept_smaller += len(smaller)
                    outcomes.extend(self._usable(j, "already_present", smaller[k]) for k in smaller for j in missing[k])
                    failed = [self._failed(j, e.reason, e.detail) for k, js in missing.items() if k not in smaller
                              for j in js]
                    return self._done(outcomes + failed)
                self.counts.downloaded_again += len(smaller)
            for key, key_jobs in missing.items():
                if data is not None and info is not None:
                    stored = await asyncio.to_thread(self.store.write, key, data, info)
                else:
                    assert present is not None
                    stored = await asyncio.to_thread(self.store.duplicate, key, present)
                # A copy made from another record's finished file counts as fetched in this run.
                outcomes.extend(self._usable(j, "fetched", stored) for j in key_jobs)
        return self._done(outcomes)
