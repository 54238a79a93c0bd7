"""How many images are enough? Train on nested random subsets and measure each on one validation set.

    python curve.py --manifest data/manifest.jsonl --sizes 250,500,1000,1566 --caption "{title}" \
        --label-field category --survey-margin 0.025

Takes finetune.py's settings (model, data, captions, training; --config too); each size trains the
starting model afresh with them. Writes runs/NAME/curve.json, curve.png and curve.html.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__  # noqa: F401  (the package first: it puts a fast BLAS under MLX on Linux)
from .flags import margin_text
from .settings import FinetuneConfig, add_arguments, config_from_args
from .run.learning_curve import learning_curve, parse_sizes
from .command import add_version, run_command
from .errors import InputError


def curve_parser() -> argparse.ArgumentParser:
    """The config tree's flags (as finetune.py's) plus the curve's own; none of finetune's run control."""
    p = argparse.ArgumentParser(
        prog="curve.py",
        description="Learning curve: fine-tune on nested random subsets of the training split (each contains the "
                    "smaller ones), evaluate each on one fixed validation set with 95% bootstrap intervals, "
                    "and say where more images stop helping.")
    add_version(p)
    add_arguments(p)
    g = p.add_argument_group("learning curve")
    g.add_argument("--sizes", "--learning-curve", dest="sizes", required=True, metavar="N,N,...",
                   help="training-set sizes to measure, e.g. 250,500,1000,1566 (each <= the training split)")
    g.add_argument("--flat-threshold", type=float, default=0.01, metavar="G",
                   help="the curve is flat once each further 100 images gains less than G mean recall@1 "
                        "(default: 0.01)")
    g.add_argument("--survey-margin", type=margin_text, metavar="E",
                   help="mark the survey formula's n = N / (1 + N E^2) on the plot without sampling the data "
                        "(--margin also samples it)")
    g.add_argument("--population", type=int, metavar="N",
                   help="N for the survey formula (default: the records file's, else the manifest's records)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = curve_parser().parse_args(argv)
    state: dict = {}

    def work() -> None:
        sizes = state["sizes"] = parse_sizes(args.sizes)
        if args.flat_threshold <= 0:
            raise InputError("--flat-threshold must be > 0")
        config = state["config"] = config_from_args(args)
        if config.test_fraction is None:  # the curve scores on validation only: no test set unless asked
            config = state["config"] = replace(config, test_fraction=0.0)
        learning_curve(config, sizes, args.flat_threshold, args.survey_margin, args.population,
                       progress=config.fetch.progress)

    return run_command(work, interrupted=lambda: interrupted_line(state.get("config"), state.get("sizes")))


def interrupted_line(config: FinetuneConfig | None, sizes: list[int] | None) -> str:
    """Ctrl-C's one line: how many sizes curve.json keeps (it is rewritten after each size)."""
    saved = Path(config.runs_dir) / config.name / "curve.json" if config and config.name else None
    done = len(json.loads(saved.read_text(encoding="utf-8"))["sizes"]) if saved and saved.is_file() else 0
    if not done:
        return "interrupted before the first size finished; nothing kept"
    return f"interrupted after {done} of {len(sizes or [])} sizes; {saved} keeps them"


if __name__ == "__main__":
    sys.exit(main())
