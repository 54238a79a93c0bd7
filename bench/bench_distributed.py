#!/usr/bin/env python
"""Data-parallel training throughput: 1 rank vs N ranks on THIS machine, and the all-reduce cost.

  taskset -c 1 python bench/bench_distributed.py                 # 1 and 2 ranks, global batch 32
  python bench/bench_distributed.py --ranks 1 2 4 --batch 64 --steps 8

Every run trains the same small CLIP (random weights, vision 256-wide x 4 layers at 96 px,
text 256-wide x 4 layers) with the same GLOBAL batch; N ranks each embed batch/N images.
Ranks are started as `mlx.launch --backend ring` starts them (MLX_RANK + MLX_HOSTFILE on
127.0.0.1). Ranks on one machine share its cores (and here whatever taskset gives this
process), so this measures the overhead of the distributed step, not the speed-up of adding
Macs: on N machines each rank has its own cores and the step time is about the 1-rank time
of batch/N plus the all-reduce. The all-reduce time is an all_sum of a tree shaped like the
gradients (grouped as the training step groups them), timed on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VISION = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
              image_size=96, patch_size=16)
TEXT = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
            max_position_embeddings=77)


def worker(model_path: str, batch: int, steps: int, out: str) -> None:
    sys.path.insert(0, str(ROOT))
    import mlx_clip  # noqa: F401  (first)
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_clip.train import collectives, distributed
    from mlx_clip.train.optim import OptimConfig, make_optimizer

    dist = distributed.init()
    model = mlx_clip.load(model_path)
    trainer = dist.trainer(model, make_optimizer(OptimConfig(lr=1e-5, warmup=0), total_steps=1000),
                           eos_token_id=model.tokenizer.eos_token_id)
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "vase", "coin", "brooch", "bronze", "roman", "silver", "fragment"]
    captions = [" ".join(rng.choice(words, 6)) for _ in range(batch)]
    ids = model.tokenizer(captions)
    size = VISION["image_size"]
    pixels = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    start, stop, rows = distributed.shard_bounds(batch, dist.rank, dist.size)
    extra = {"valid": np.ones(rows, bool)} if dist.active else {}
    times = []
    for step in range(steps + 2):  # 2 warm-up steps (compile)
        began = time.perf_counter()
        trainer.step(ids[start:stop], pixels[start:stop], **extra)
        times.append(time.perf_counter() - began)
    step_s = float(np.median(times[2:]))
    reduce_s = None
    params = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    if dist.active:
        grads = [mx.zeros_like(v) for _, v in tree_flatten(model.trainable_parameters())]
        tree = {str(i): g for i, g in enumerate(grads)}
        mx.eval(tree)
        reduce_times = []
        for _ in range(steps + 1):
            began = time.perf_counter()
            mx.eval(collectives.sum_tree(tree, dist.group))
            reduce_times.append(time.perf_counter() - began)
        reduce_s = float(np.median(reduce_times[1:]))
    if dist.is_main:
        Path(out).write_text(json.dumps({"ranks": dist.size, "batch": batch, "step_s": step_s,
                                         "images_per_s": batch / step_s, "all_reduce_s": reduce_s,
                                         "params": params}))


def launch(n: int, model_path: Path, batch: int, steps: int, out: Path) -> dict:
    import socket

    args = [sys.executable, __file__, "--worker", str(model_path), "--batch", str(batch), "--steps", str(steps),
            "--out", str(out)]
    if n == 1:
        subprocess.run(args, check=True, cwd=ROOT)
    else:
        socks = [socket.socket() for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        hostfile = out.with_suffix(".hosts.json")
        hostfile.write_text(json.dumps([[f"127.0.0.1:{s.getsockname()[1]}"] for s in socks]))
        for s in socks:
            s.close()
        procs = [subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, MLX_RANK=str(r), MLX_HOSTFILE=str(hostfile)))
                 for r in range(n)]
        codes = [p.wait(timeout=600) for p in procs]
        if any(codes):
            raise SystemExit(f"{n} ranks: exit codes {codes}")
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=32, help="global batch")
    p.add_argument("--steps", type=int, default=5, help="measured steps (after 2 warm-up steps)")
    p.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.batch, args.steps, args.out)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from clip_fixtures import make_hf_clip

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_hf_clip(tmp / "model", vision=VISION, text=TEXT, projection_dim=256)
        affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        print(f"cores available to all ranks together: {affinity}; global batch {args.batch}, "
              f"vision {VISION['hidden_size']}x{VISION['num_hidden_layers']} @ {VISION['image_size']}px")
        rows = [launch(n, model, args.batch, args.steps, tmp / f"r{n}.json") for n in args.ranks]
    print(f"{'ranks':>5} {'step s':>8} {'images/s':>9} {'all-reduce s':>13} {'params':>9}")
    for r in rows:
        reduce = f"{r['all_reduce_s']:.4f}" if r["all_reduce_s"] is not None else "-"
        print(f"{r['ranks']:>5} {r['step_s']:8.3f} {r['images_per_s']:9.1f} {reduce:>13} {r['params'] / 1e6:8.2f}M")


if __name__ == "__main__":
    main()
