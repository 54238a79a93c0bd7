#!/usr/bin/env python
"""Per-step overhead: MLX vs PyTorch training steps/s on a model so small that the step's fixed
costs (kernel launches, the optimizer's per-tensor work, host syncs, batch upload) dominate.

  python bench/bench_overhead.py --repeats 7 --json bench/results/overhead-2core.json

The model is bench/compare_setup.py's `tiny` CLIP (2 layers of width 64 per tower, 64-px images
in 16-px patches, the full 49408-token embedding), batch 32; both sides are the ones
bench/mlx_vs_torch.py runs (compare_sides.py: this project's `Trainer` as the training loop drives it,
transformers' CLIPModel with torch.optim.AdamW, fused unless --torch-adamw says otherwise: on the
CPU PyTorch's default AdamW is a per-tensor loop, 10x slower here than fused=True, and a fair
comparison takes each side at its best), each run in its own child process, interleaved
MLX, PyTorch, then PyTorch, MLX, ... The JSON has the MLX/PyTorch `ratio` (median steps/s over
median steps/s) and `steps_per_s` of each side at its top level, beside mlx_vs_torch.py's full entry.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlx_vs_torch import add_rates, row  # noqa: E402
from compare_env import describe_machine, environment, save_report  # noqa: E402
from compare_schedule import interleaved, spread, summarise  # noqa: E402
from compare_setup import CONFIGS, Settings, add_torch_adamw_flag, initial_weights_path  # noqa: E402
from compare_sides import run_isolated  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny", help="model size (default tiny)")
    parser.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--steps", type=int, default=60, help="measured steps per run (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured steps first (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per side (default 5)")
    add_torch_adamw_flag(parser)
    parser.add_argument("--label", default="", help="a note stored in the JSON (e.g. before / after)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mlx-clip-bench"), help="initial weights")
    args = parser.parse_args(argv)
    settings = Settings(args.config, args.batch, "float32", args.steps, args.warmup, device="cpu",
                        repeats=args.repeats, torch_adamw=args.torch_adamw)
    args.cache.mkdir(parents=True, exist_ok=True)
    init = initial_weights_path(settings, args.cache)
    env = environment()
    print(f"{describe_machine(env)} | overhead case: config {args.config}, batch {args.batch}, "
          f"{args.repeats} interleaved repeats of {args.steps} steps, PyTorch AdamW {args.torch_adamw}")
    runs, order = [], []
    for repeat, case, framework in interleaved(["train"], args.repeats):
        result = run_isolated(framework, settings, case, init)
        runs.append(result)
        order.append(f"{repeat}:{framework}")
        print(f"  repeat {repeat + 1}/{args.repeats} {framework:<5} {result['images_per_s'] / args.batch:.1f} steps/s",
              flush=True)
    entry = summarise(runs)
    add_rates(entry, settings, "train")
    steps = {side: spread([r["images_per_s"] / args.batch for r in entry[side]["runs"]]) for side in ("mlx", "torch")}
    report = {
        "ratio": entry["ratio"], "paired_ratio": entry["paired_ratio"], "steps_per_s": steps, "label": args.label,
        "kernels": {"mlx": entry["mlx"]["extra"]["blas"], "torch": entry["torch"]["extra"]["blas"],
                    "torch_cpu_capability": entry["torch"]["extra"]["cpu_capability"]},
        "torch_adamw": args.torch_adamw,
        "versions": {"mlx": entry["mlx"]["extra"]["mlx_version"], "torch": entry["torch"]["extra"]["torch_version"]},
        "environment": env, "settings": asdict(settings), "run_order": order, "case": entry,
    }
    print(row("train", entry))
    print(f"steps/s MLX {steps['mlx']['median']:.1f} ({steps['mlx']['min']:.1f}-{steps['mlx']['max']:.1f}), "
          f"PyTorch {steps['torch']['median']:.1f} ({steps['torch']['min']:.1f}-{steps['torch']['max']:.1f}); "
          f"MLX/PyTorch {entry['ratio']:.2f}x (paired {entry['paired_ratio']['min']:.2f}-"
          f"{entry['paired_ratio']['max']:.2f}); MLX on {report['kernels']['mlx']}, PyTorch on "
          f"{report['kernels']['torch']} ({report['kernels']['torch_cpu_capability']}), AdamW {args.torch_adamw}")
    save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
