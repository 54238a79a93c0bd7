"""Command-line flags for choosing and fetching records, shared by fetch.py and finetune.py."""

from __future__ import annotations

import argparse
import math
import codecs
import sys
from pathlib import Path

from . import __version__
from .errors import InputError
from .data.fetcher import FetchConfig, FetchSummary, fetch_records
from .data.imagefolder import write_metadata

__all__ = ["add_sample_arguments", "add_fetch_arguments", "fetch_config_from_args", "main"]

_DEFAULTS = FetchConfig()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _margin(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, e.g. 0.025; got {text}")
    return text  # kept as text so the sample size is computed from the exact decimal


def _encoding(text: str) -> str:
    try:
        return codecs.lookup(text).name
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {text!r} (e.g. utf-8, cp1252, latin-1)") from None


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags naming the records' fields and the sample to draw from them."""
    group = parser.add_argument_group("records and sample")
    group.add_argument(
        "--url-field", metavar="FIELD",
        help="field holding each record's image URL; a dotted path reaches nested fields "
        "(media.0.url). Default: detected (image_url, primaryImage, url, IIIF links, ...)",
    )
    group.add_argument(
        "--path-field", metavar="FIELD",
        help="field holding a local image path, relative to the records file; such images are "
        "checked and kept without downloading",
    )
    group.add_argument(
        "--id-field", metavar="FIELD",
        help="field holding each record's identifier (names its image file and its failure "
        "line). Default: an id-like field (id, identifier, objectID) if present",
    )
    group.add_argument(
        "--encoding", type=_encoding, metavar="NAME",
        help="text encoding of the records file, e.g. cp1252 for a CSV saved by Excel on Windows "
        "(default: UTF-8, with or without a byte-order mark)",
    )
    size = group.add_mutually_exclusive_group()
    size.add_argument(
        "--sample", metavar="N", type=_positive_int,
        help="use a random sample of N records (default: every record)",
    )
    size.add_argument(
        "--margin", metavar="E", type=_margin,
        help="find the sample size for margin of error E (e.g. 0.025) with "
        "n = ceil(N / (1 + N E^2)), and print how",
    )
    group.add_argument(
        "--stratify", metavar="FIELD",
        help="draw the sample in proportion to this field's values (each value keeps its "
        "share, every value gets at least one record); records without it form '(missing)'",
    )
    group.add_argument(
        "--seed", type=int, default=0,
        help="random seed: the same seed and records give the same sample (default: 0)",
    )


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    """The sample flags plus the download flags of fetch.py."""
    add_sample_arguments(parser)
    group = parser.add_argument_group("downloads")
    group.add_argument(
        "--out", type=Path, default=Path(_DEFAULTS.out), metavar="DIR",
        help="output folder for manifest.jsonl, failures.jsonl and images/ (default: data/)",
    )
    group.add_argument(
        "--concurrency", type=_positive_int, default=_DEFAULTS.concurrency, metavar="N",
        help=f"requests in flight overall (default: {_DEFAULTS.concurrency})",
    )
    group.add_argument(
        "--per-host", type=_positive_int, default=_DEFAULTS.per_host, metavar="N",
        help=f"requests in flight per host (default: {_DEFAULTS.per_host})",
    )
    group.add_argument(
        "--timeout", type=float, default=_DEFAULTS.read_timeout, metavar="SECONDS",
        help="give up on a request after this long without data; connecting gets a third "
        f"of it, at most {_DEFAULTS.connect_timeout:g} s (default: {_DEFAULTS.read_timeout:g})",
    )
    group.add_argument(
        "--deadline", type=float, default=_DEFAULTS.deadline, metavar="SECONDS",
        help="give up on an image this long after its first request, retries included, "
        f"however steadily a slow server trickles bytes (default: {_DEFAULTS.deadline:g})",
    )
    group.add_argument(
        "--retries", type=int, default=_DEFAULTS.retries, metavar="N",
        help="further tries after timeouts, connection errors, HTTP 5xx and 429, with "
        f"exponential backoff and Retry-After honoured (default: {_DEFAULTS.retries})",
    )
    group.add_argument(
        "--max-bytes", type=_positive_int, default=_DEFAULTS.max_bytes, metavar="N",
        help=f"largest image to accept, in bytes (default: {_DEFAULTS.max_bytes:,})",
    )
    group.add_argument(
        "--allow-private", action="store_true",
        help="follow redirects from public hosts to loopback, link-local and private "
        "addresses (refused by default as redirect_private; records pointing at such an "
        "address directly are always fetched)",
    )
    group.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar",
    )


def fetch_config_from_args(args: argparse.Namespace) -> FetchConfig:
    """A :class:`FetchConfig` from flags added by :func:`add_fetch_arguments`.

    Raises :class:`InputError` for a ``--timeout`` or ``--deadline`` that is not a finite
    number of seconds above 0 (0 would hang, a negative one would fail every request).
    """
    for flag, value in (("--timeout", args.timeout), ("--deadline", args.deadline)):
        if not (value > 0 and math.isfinite(value)):
            raise InputError(f"{flag} must be a number of seconds above 0, got {value:g}")
    return FetchConfig(
        out=args.out,
        url_field=args.url_field,
        path_field=args.path_field,
        encoding=args.encoding,
        id_field=args.id_field,
        concurrency=args.concurrency,
        per_host=args.per_host,
        connect_timeout=min(_DEFAULTS.connect_timeout, args.timeout / 3),
        read_timeout=args.timeout,
        deadline=args.deadline,
        retries=max(0, args.retries),
        max_bytes=args.max_bytes,
        progress=not args.no_progress,
        allow_private=args.allow_private,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetch.py",
        description="Draw a sample of a catalogue's records, download their images and write "
        "OUT/manifest.jsonl (each usable record plus image_path, sha256, width, height) and "
        "OUT/failures.jsonl (each failed record's id, url and reason). Interrupted runs resume.",
    )
    parser.add_argument(
        "records", type=Path,
        help="records file: a JSON array, a JSON object holding one list of records, "
        "JSON Lines or CSV (detected from the content)",
    )
    add_fetch_arguments(parser)
    parser.add_argument("--version", action="version", version=f"mlx-clip-finetune {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run fetch.py; returns the exit code (2 for bad input, with one line on stderr)."""
    args = build_parser().parse_args(argv)
    # A record's text may hold a lone surrogate (a title cut inside an emoji): print it escaped.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        summary: FetchSummary = fetch_records(
            args.records,
            fetch_config_from_args(args),
            sample=args.sample,
            margin=args.margin,
            stratify=args.stratify,
            seed=args.seed,
            log=print,
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(summary)
    print(write_metadata(summary.manifest_path))  # the ImageFolder view of the manifest, for `datasets`
    return 0


if __name__ == "__main__":
    sys.exit(main())
