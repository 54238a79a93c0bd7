#!/usr/bin/env python
"""MLX alone, one code tree against another, on bench/bench_overhead.py's case (tiny CLIP, batch
32, float32, the step as the training loop drives it): on shared cores PyTorch's thread pool
suffers more from other jobs than MLX does, so old-vs-new MLX is the fairer test of an MLX change.

  python bench/overhead_mlx_ab.py --old /work/main --new . --repeats 5 --json bench/results/overhead-mlx-ab.json

Each run is its own process with PYTHONPATH set to its tree (that tree's mlx_clip and its
bench/compare_sides.py), runs alternating old, new, new, old, ...; the JSON has each tree's
steps/s per run, their medians, the new/old ratio and the load average before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_env import environment, save_report  # noqa: E402
from compare_setup import Settings, initial_weights_path  # noqa: E402

CHILD = """
import json, sys
sys.path[:0] = [{tree!r}, {tree!r} + "/bench"]
from compare_setup import Settings
from compare_sides import run_mlx
from pathlib import Path
r = run_mlx(Settings("tiny", 32, "float32", {steps}, {warmup}, device="cpu"), "train", Path({init!r}))
print("RESULT", json.dumps({{"steps_per_s": r.images_per_s / 32, "blas": r.extra["blas"]}}))
"""


def run_tree(tree: Path, steps: int, warmup: int, init: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    code = CHILD.format(tree=str(tree), steps=steps, warmup=warmup, init=str(init))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the code tree to compare against")
    parser.add_argument("--new", type=Path, default=HERE.parent, help="the changed tree (default this one)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per tree (default 5)")
    parser.add_argument("--steps", type=int, default=60, help="measured steps per run (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured steps first (default 10)")
    parser.add_argument("--label", default="", help="a note stored in the JSON")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    init = initial_weights_path(Settings("tiny", 32, "float32", device="cpu"), Path("/tmp/mlx-clip-bench"))
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    runs: dict[str, list] = {"old": [], "new": []}
    for repeat in range(args.repeats):
        for side in (("old", "new") if repeat % 2 == 0 else ("new", "old")):
            load = os.getloadavg()[0]
            result = run_tree(trees[side], args.steps, args.warmup, init)
            runs[side].append(dict(result, load_average=load))
            print(f"  {repeat + 1}/{args.repeats} {side}: {result['steps_per_s']:.1f} steps/s (load {load:.2f})",
                  flush=True)
    medians = {side: statistics.median(r["steps_per_s"] for r in runs[side]) for side in runs}
    report = {"label": args.label, "trees": {k: str(v) for k, v in trees.items()}, "median_steps_per_s": medians,
              "new_over_old": medians["new"] / medians["old"], "runs": runs, "environment": environment()}
    print(f"MLX steps/s median: old {medians['old']:.1f}, new {medians['new']:.1f}, "
          f"new/old {report['new_over_old']:.2f}x ({runs['new'][0]['blas']})")
    save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
