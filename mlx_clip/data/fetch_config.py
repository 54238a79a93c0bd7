"""What fetch writes where (manifest, failures, images, lock) and how it downloads (FetchConfig),
and what a fetch run reports (FetchSummary)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..flags import encoding_name, positive_int, positive_seconds, setting
from .redirect_guard import IPAddress, is_private_address
from .record_ids import MANIFEST_ID
from .stored_copy import DEFAULT_MAX_SIDE

USER_AGENT = "mlx-clip-finetune/0.1 (+https://github.com/mlx-clip-finetune/mlx-clip-finetune)"
MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.jsonl"
IMAGES_DIR = "images"
ORIGINALS_DIR = "originals"  # --keep-originals: the downloaded files of resized images (never local files)
LOCK_NAME = ".fetch.lock"
MANIFEST_KEYS = (MANIFEST_ID, "image_path", "sha256", "width", "height", "original_width", "original_height",
                 "original_path")
"""Keys ``fetch`` adds to each record in the manifest (``record_id``: the id
:func:`~mlx_clip.data.records.record_id` gave it, which also names its image file; ``sha256`` and
``original_width``/``original_height`` describe the original image, ``width``/``height`` the file
at ``image_path``, a resized copy when the original was larger than ``--max-side``;
``original_path`` names the original's file when it is kept: with ``--keep-originals``, and for
a local image read through a resized copy, the local file, which stays where it is).

A record's own value under one of these keys (say a museum object's ``width`` in cm) is kept
under ``record_<key>`` (``record_width``); a local ``image_path`` read with ``--path-field
image_path`` is simply rewritten relative to the manifest.
"""


RECORDS_GROUP = "records and sample"  # the argument group of the fields that read the records


@dataclass(frozen=True)
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
        "checked and read where they are (through a resized copy in OUT/images when larger than "
        "--max-side), never downloaded, moved or changed", metavar="FIELD", group=RECORDS_GROUP)
    encoding: str | None = setting(
        None, "text encoding of the records file, e.g. cp1252 for a CSV saved by Excel on Windows "
        "(default: UTF-8, with or without a byte-order mark)", type=encoding_name, metavar="NAME",
        group=RECORDS_GROUP)
    id_field: str | None = setting(
        None, "field holding each record's identifier, unique to each record (names its image file, "
        "its failure line and its place in split.json). Default: an id-like field (id, identifier, "
        "objectID) if present", metavar="FIELD",
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
    max_side: int = setting(
        DEFAULT_MAX_SIDE, "store images whose longest side is over N pixels resized to N (aspect kept, "
        "JPEG quality 92, PNG when transparent): the file training reads, decoded 10-40x faster than "
        "a 3000x2250 original; the manifest's sha256 stays the original's. A large --path-field file "
        "gets its copy in OUT/images (the file is only read). 0 keeps full size",
        type=int, metavar="N", check=lambda n: None if n >= 0 else f"must be 0 (full size) or a number of pixels, got {n}")
    keep_originals: bool = setting(
        False, "also keep the original of each resized download, in OUT/originals/ (the manifest's "
        "original_path); a later run with another --max-side resizes from them instead of downloading "
        "again. --path-field files stay where they are and need no keeping")
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
    # Put before the names of the lists written (manifest.jsonl, failures.jsonl): a dry run writes
    # dry-run-manifest.jsonl, so the lists of a sample fetched before stay as they were.
    list_prefix: str = setting("", cli=False, save=False)

    def list_paths(self) -> tuple[Path, Path]:
        """The manifest and failures list this fetch writes in `out`."""
        return self.out / (self.list_prefix + MANIFEST_NAME), self.out / (self.list_prefix + FAILURES_NAME)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))  # a str from a settings file or a caller
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
        if self.max_side < 0:
            raise ValueError("max_side must be 0 (full size) or a number of pixels")

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
    max_side: int = 0  # --max-side of this run
    resized: int = 0  # downloaded records whose stored file is a resized copy (local ones: local_copies)
    resized_on_disk: int = 0  # stored again at this --max-side from files an earlier run left
    downloaded_again: int = 0  # originals downloaded again for a larger --max-side (or --keep-originals)
    kept_smaller: int = 0  # ... whose download failed: the smaller copy an earlier run made stays
    local_copies: int = 0  # local records read through a resized copy in OUT/images
    local_copies_made: int = 0  # ... of which this run wrote the copy (the others were current)
    originals_dir: Path | None = None  # --keep-originals

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
        if self.local_copies:
            lines.append(f"    {self.local_copies:,} read from copies resized to {self.max_side} px in "
                         f"{self.manifest_path.parent / IMAGES_DIR} ({self.local_copies_made:,} made in this run); "
                         "the files themselves stay where they are (the manifest's original_path)")
        lines.extend(self._stored_lines())
        lines.append(f"  failed           {self.failed_total:,}" + (
            f" -> {self.failures_path}" if self.failed_total else ""))
        for reason, count in sorted(self.failed.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {reason:<16} {count:,}")
        rate = f", {self.images_per_second:.1f} images/s fetched" if self.fetched else ""
        lines.append(f"  time             {self.seconds:.1f} s{rate}")
        return "\n".join(lines)

    def _stored_lines(self) -> list[str]:
        """What training will read: resized copies (how many, the size) or full-size files."""
        if not self.max_side:
            return ["  stored           full size (--max-side 0)"]
        lines = [f"  resized          {self.resized:,} stored with the longest side at {self.max_side} px "
                 "(what training reads; --max-side 0 keeps full size; sha256 is the original's)"]
        if self.resized_on_disk:
            lines.append(f"    {self.resized_on_disk:,} of them stored again at this size from files already here")
        if self.downloaded_again:
            lines.append(f"    {self.downloaded_again:,} originals downloaded again: their stored copies were "
                         "smaller than this size (--keep-originals keeps originals for such changes)")
        if self.kept_smaller:
            lines.append(f"    {self.kept_smaller:,} kept at the smaller size an earlier run stored: "
                         "their originals could not be downloaded again")
        if self.originals_dir is not None:
            lines.append(f"  originals        kept in {self.originals_dir} (the manifest's original_path)")
        return lines
