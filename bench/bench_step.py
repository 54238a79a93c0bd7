#!/usr/bin/env python
"""The training step's CPU fast paths on and off, interleaved step by step in one process.

  python bench/bench_step.py --config b32 --batch 32 --rounds 6 --json bench/results/step_ab.json

Variants, each its own model (same weights) and optimizer:
  plain       nn.Linear, one stream, AdamW as make_optimizer builds it (the step before these fast paths)
  row-major   fast_ops.Linear: weight gradients row-major, so AdamW's fused update is contiguous
              (the shipped step)
A third variant, both towers split across one CPU stream per core with AdamW's updates spread
over them, was measured 10 % slower than `plain` on 2 quiet cores and removed (bench/README.md).
Every round runs one step of each variant, in rotating order, so a shared machine's load falls
on all of them alike; the figures are medians over rounds with min and max, and each variant's
per-round ratio to `plain`. Process CPU time per step is reported too (less sensitive to other
jobs than wall time, but blind to how well the cores were shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx_clip  # noqa: E402,F401  (first: OpenBLAS under MLX on Linux)
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from compare_env import describe_machine, environment  # noqa: E402
from compare_schedule import spread  # noqa: E402
from compare_setup import CONFIGS, EOS, Settings, synthetic_batch  # noqa: E402
from mlx_clip._blas import describe_blas  # noqa: E402
from mlx_clip.models import model as model_module  # noqa: E402
from mlx_clip.models.clip import CLIP  # noqa: E402
from mlx_clip.models.config import CLIPConfig  # noqa: E402
from mlx_clip.train.optim import OptimConfig, make_optimizer  # noqa: E402
from mlx_clip.models.trainable import LockConfig, apply_locks  # noqa: E402
from mlx_clip.train.step import Trainer  # noqa: E402

VARIANTS = ("plain", "row-major")


def build(variant: str, config: CLIPConfig, weights: list, lock_text: bool) -> Trainer:
    """The variant's trainer; `plain` builds its model with nn.Linear (swapped in for construction only)."""
    fast_linear = model_module.Linear
    if variant == "plain":
        model_module.Linear = nn.Linear
    try:
        model = CLIP(config)
        model.load_weights(weights)
        apply_locks(model, LockConfig(lock_text=lock_text))
        optimizer = make_optimizer(OptimConfig(lr=1e-5, weight_decay=0.1, warmup=0), total_steps=1000)
    finally:
        model_module.Linear = fast_linear
    return Trainer(model, optimizer, eos_token_id=EOS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="b32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (one step of each variant)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    parser.add_argument("--lock-text", action="store_true", help="the text tower locked (mlx_vs_torch.py's second case)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    spec = CONFIGS[args.config]
    config = CLIPConfig.from_dict({"model_type": "clip", "projection_dim": spec["projection_dim"],
                                   "text_config": dict(spec["text"], max_position_embeddings=77, eos_token_id=EOS),
                                   "vision_config": spec["vision"]}, "bench")
    weights = list(tree_flatten(CLIP(config).parameters()))
    trainers = {v: build(v, config, weights, args.lock_text) for v in variants}
    ids, pixels = synthetic_batch(Settings(args.config, args.batch), config.vision.image_size)
    env = environment()
    print(f"{describe_machine(env)} | {describe_blas()} | {args.config}, batch {args.batch}"
          + (", text locked" if args.lock_text else ""))
    wall: dict = {v: [] for v in variants}
    cpu: dict = {v: [] for v in variants}
    for round_ in range(args.warmup + args.rounds):
        order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
        for variant in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            trainers[variant].step(ids, pixels)
            if round_ >= args.warmup:
                wall[variant].append(time.perf_counter() - start)
                cpu[variant].append(time.process_time() - start_cpu)
        if round_ >= args.warmup:
            print(f"  round {round_ - args.warmup + 1}: " + ", ".join(f"{v} {wall[v][-1]:.2f}s" for v in variants),
                  flush=True)
    report = {"environment": env, "blas": describe_blas(), "mlx_version": mx.__version__, "settings": vars(args) | {
        "json": str(args.json)}, "variants": {}}
    for v in variants:
        entry = report["variants"][v] = {
            "images_per_s": spread([args.batch / t for t in wall[v]]),
            "cpu_seconds_per_step": spread(cpu[v]),
        }
        if "plain" in wall:
            entry["speedup_vs_plain"] = spread([p / t for p, t in zip(wall["plain"], wall[v])])
        rate = entry["images_per_s"]
        print(f"{v:<10} {rate['median']:6.2f} images/s ({rate['min']:.2f}-{rate['max']:.2f}), "
              f"CPU {statistics.median(cpu[v]):.2f} s/step"
              + (f", x{entry['speedup_vs_plain']['median']:.2f} vs plain" if "plain" in wall else ""))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
