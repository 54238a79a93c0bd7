"""fetch.py: draw a sample of the records and fetch its images; its flags are the config tree's
`sample` and `fetch` settings (mlx_clip.settings), the same ones finetune.py takes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .flags import add_config_arguments, apply, given
from .settings import FinetuneConfig
from .command import add_version, run_command
from .data.fetch_config import FetchSummary
from .data.fetcher import fetch_records
from .data.imagefolder import write_metadata

__all__ = ["FETCH_SETTINGS", "build_parser", "main"]

FETCH_SETTINGS = ("sample", "fetch")  # the subtrees of the config tree that fetch.py takes as flags


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
    add_config_arguments(parser, FinetuneConfig, only=FETCH_SETTINGS)
    return add_version(parser)


def main(argv: list[str] | None = None) -> int:
    """Run fetch.py; returns the exit code (mlx_clip.command: 2 for bad input, with one line on stderr)."""
    args = build_parser().parse_args(argv)

    def work() -> None:
        config = apply(FinetuneConfig(), given(args, FinetuneConfig))
        summary: FetchSummary = fetch_records(
            args.records,
            config.fetch,
            sample=config.sample.sample,
            margin=config.sample.margin,
            stratify=config.sample.stratify,
            seed=config.sample.seed,
            log=print,
        )
        print(summary)
        print(write_metadata(summary.manifest_path))  # the ImageFolder view of the manifest, for `datasets`

    # a full disk or a read-only --out: one line, finished images are kept
    return run_command(work, interrupted=lambda: "interrupted; run the same command again to resume",
                       again=lambda: "run the same command again (finished images are kept)")


if __name__ == "__main__":
    sys.exit(main())
