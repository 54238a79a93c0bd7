"""Compare fine-tuning runs on their shared held-out test set, with paired bootstrap intervals.

    python compare.py runs/label-period runs/label-period-findspot

Prints each run's test scores and each run's difference from the first (paired over the same
test images), and writes compare.json and compare.html (to --out, default runs/compare-A-B).
Runs must share one test set: the same records, --seed, --stratify and fractions.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__  # noqa: F401  (the package first: it puts a fast BLAS under MLX on Linux)
from .run.compare_runs import main_compare
from .command import add_version, run_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare.py", description="Compare finetune.py runs on their shared held-out test set: each "
                                            "run's scores and its difference from the first, with paired 95% "
                                            "bootstrap intervals.")
    add_version(p)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (runs/NAME); the first is the reference")
    p.add_argument("--out", metavar="DIR", help="where to write compare.json and compare.html "
                                                "(default: runs/compare-A-B beside the first run)")
    args = p.parse_args(argv)
    return run_command(lambda: main_compare(args.runs, args.out),
                       interrupted=lambda: "interrupted; run the same command again")


if __name__ == "__main__":
    sys.exit(main())
