#!/usr/bin/env python
"""Peak memory and training speed of full fine-tuning, LoRA and gradient checkpointing.

  python bench/bench_memory.py                                  # B/32, B/16, L/14 x 4 modes, batch 32
  python bench/bench_memory.py --models b32 --steps 2 --json bench/results/memory-b32-cpu.json

Each (model, mode) runs this project's real training step (`mlx_clip.train.step.Trainer`, AdamW,
contrastive loss) on a CLIP with random weights (configurations from bench/mlx_vs_torch.py), random
224 px pixels and catalogue-length token ids, in its own child process, so every peak is clean.
The child reports the MLX peak (mx.get_peak_memory over a measured step: weights, gradients,
AdamW moments and activations) and the process's peak RSS.

A case that would not fit must not take the machine down: the parent kills a child whose
resident memory passes --limit-gib (polled with `ps`; a child that ends first is judged by
its own peak, which `wait4` reports) or that runs past --timeout, and on
Linux the child also runs under RLIMIT_AS (the limit plus --address-slack-gib for libraries
and thread stacks); such a case is reported as "did not fit" (or "timed out"), and the next
one runs. A case whose weights, gradients and moments alone pass the limit is not started.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from compare_env import blas_libraries, peak_rss  # noqa: E402
from compare_setup import CONFIGS, EOS, VOCAB  # noqa: E402  (the same model configurations)

MODES = {  # name: (LoRA rank, gradient checkpointing)
    "full": (0, False),
    "lora": (8, False),
    "checkpoint": (0, True),
    "lora+checkpoint": (8, True),
}
GIB = 2**30


def clip_config(name: str) -> dict:
    spec = CONFIGS[name]
    return {"model_type": "clip", "projection_dim": spec["projection_dim"],
            "vision_config": dict(spec["vision"]),
            "text_config": dict(spec["text"], vocab_size=VOCAB, max_position_embeddings=77, eos_token_id=EOS)}


def child(model_name: str, mode: str, batch: int, steps: int, warmup: int) -> dict:
    """One case in this process: build, warm up (compile), reset the peak, time `steps` steps."""
    import mlx_clip  # noqa: F401  (first: OpenBLAS under MLX on Linux)
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_clip.models.config import CLIPConfig
    from mlx_clip.models.lora import LoraConfig
    from mlx_clip.models.model import CLIPModel, set_grad_checkpoint
    from mlx_clip.train.optim import OptimConfig, make_optimizer
    from mlx_clip.models.trainable import LockConfig, apply_locks
    from mlx_clip.train.step import Trainer

    rank, checkpoint = MODES[mode]
    mx.random.seed(0)
    config = CLIPConfig.from_dict(clip_config(model_name))
    model = CLIPModel(config)
    apply_locks(model, LockConfig(), LoraConfig(rank=rank) if rank else None)
    set_grad_checkpoint(model, checkpoint)
    mx.eval(model.parameters())
    params = sum(v.size for _, v in tree_flatten(model.parameters()))
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    trainer = Trainer(model, make_optimizer(OptimConfig(lr=1e-5, warmup=0), 100), eos_token_id=EOS)
    rng = np.random.default_rng(0)
    size = config.vision.image_size
    pixels = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    ids = rng.integers(1, 49000, (batch, 77))
    ends = rng.integers(8, 41, batch)  # captions of 8-40 tokens, as a catalogue's
    for row, end in enumerate(ends):
        ids[row, end] = EOS
        ids[row, end + 1:] = 0
    for _ in range(warmup):
        trainer.step(ids, pixels)
    mx.synchronize()
    mx.reset_peak_memory()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        trainer.step(ids, pixels)
        times.append(time.perf_counter() - started)
    rss = peak_rss()
    step_s = statistics.median(times)
    # the BLAS kernel MLX's CPU matmuls ran on (Linux: Debian's OpenBLAS, see mlx_clip/_blas.py)
    blas = [{k: lib.get(k) for k in ("filepath", "version", "architecture", "num_threads")}
            for lib in blas_libraries() if lib.get("internal_api") == "openblas"]
    return {"status": "ok", "blas": blas, "params": params, "trainable": trainable, "weights_bytes": 4 * params,
            "mlx_peak_bytes": int(mx.get_peak_memory()), "peak_rss_bytes": int(rss),
            "step_seconds": times, "images_per_s": batch / step_s}


def projected_bytes(model_name: str, mode: str) -> int:
    """Weights + gradients + AdamW moments of the trainable weights (activations come on top)."""
    spec = CONFIGS[model_name]
    params = 0
    for tower, width in (("vision", spec["vision"]), ("text", spec["text"])):
        hidden, inner, layers = width["hidden_size"], width["intermediate_size"], width["num_hidden_layers"]
        params += layers * (4 * hidden * hidden + 2 * hidden * inner)
    params += VOCAB * spec["text"]["hidden_size"]
    full = MODES[mode][0] == 0
    return 4 * params * (4 if full else 1)


def rss_of(pid: int) -> int:
    """Resident bytes of a process (`ps`: Linux and macOS); 0 when it is gone."""
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return int(out) * 1024 if out.isdigit() else 0


def reap(proc: subprocess.Popen) -> int | None:
    """The ended child's peak resident bytes (its exit code set on `proc`); None while it runs."""
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if not pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # macOS: bytes; Linux: KiB


def read(handle) -> str:
    handle.seek(0)
    text = handle.read()
    handle.close()
    return text


def run_case(model_name: str, mode: str, args: argparse.Namespace) -> dict:
    """The case in a child process under the memory and time limits; its result or why it has none."""
    limit = int(args.limit_gib * GIB)
    base = {"model": model_name, "mode": mode, "batch": args.batch, "lora_rank": MODES[mode][0],
            "grad_checkpoint": MODES[mode][1], "limit_bytes": limit}
    if projected_bytes(model_name, mode) > limit:
        return dict(base, status="did not fit", reason="weights + gradients + moments alone pass the limit")
    command = [sys.executable, __file__, "--child", model_name, mode, "--batch", str(args.batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    address_limit = limit + int(args.address_slack_gib * GIB)

    def limit_address_space() -> None:  # Linux enforces RLIMIT_AS; macOS ignores it (the poll still guards)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (address_limit, address_limit))
        except (ValueError, OSError):
            pass

    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # files: a full pipe cannot stall it
    proc = subprocess.Popen(command, stdout=out, stderr=err, text=True,
                            preexec_fn=limit_address_space if sys.platform.startswith("linux") else None)
    started, peak_seen, verdict = time.monotonic(), 0, None
    while True:
        ended = reap(proc)  # the child's own peak once it ends: a peak between two polls counts too
        peak_seen = max(peak_seen, ended if ended is not None else rss_of(proc.pid))
        if peak_seen > limit:
            verdict = "did not fit"
        elif ended is None and time.monotonic() - started > args.timeout:
            verdict = "timed out"
        if ended is not None or verdict:
            break
        time.sleep(0.25)
    if ended is None:
        proc.kill()
        proc.wait()
    stdout, stderr = (read(f) for f in (out, err))
    base["wall_seconds"] = round(time.monotonic() - started, 1)
    if verdict:
        reason = (f"resident memory passed the limit ({peak_seen / GIB:.2f} GiB seen)" if verdict == "did not fit"
                  else f"ran past --timeout {args.timeout:g}s")
        return dict(base, status=verdict, reason=reason, rss_seen_bytes=peak_seen)
    if proc.returncode == 0:
        return dict(base, **json.loads(stdout.strip().splitlines()[-1]))
    memory_error = any(text in stderr for text in ("MemoryError", "allocate", "bad_alloc", "Cannot allocate"))
    # under RLIMIT_AS a failed allocation may end the child by a signal (MLX's CPU allocator segfaults)
    return dict(base, status="did not fit" if memory_error or proc.returncode < 0 else "error",
                reason=(stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:300])


def table(results: list[dict]) -> str:
    lines = [f"{'model':6} {'mode':16} {'trainable':>10} {'MLX peak':>10} {'peak RSS':>10} {'images/s':>9}  status"]
    for r in results:
        if r["status"] == "ok":
            lines.append(f"{r['model']:6} {r['mode']:16} {r['trainable'] / 1e6:9.2f}M {r['mlx_peak_bytes'] / GIB:8.2f}G "
                         f"{r['peak_rss_bytes'] / GIB:8.2f}G {r['images_per_s']:9.2f}  ok")
        else:
            lines.append(f"{r['model']:6} {r['mode']:16} {'':>10} {'':>10} {'':>10} {'':>9}  {r['status']}"
                         + (f" ({r['reason']})" if r.get("reason") else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["b32", "b16", "l14"], choices=sorted(CONFIGS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="measured steps (the median gives images/s)")
    parser.add_argument("--warmup", type=int, default=1, help="steps before measuring (the first compiles)")
    parser.add_argument("--limit-gib", type=float, default=20.0, help="resident memory a case may use")
    parser.add_argument("--address-slack-gib", type=float, default=8.0,
                        help="Linux RLIMIT_AS = limit + this (libraries, thread stacks, allocator reserve)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a case may run")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.batch, args.steps, args.warmup)))
        return 0
    results = []
    for model_name in args.models:
        for mode in args.modes:
            results.append(run_case(model_name, mode, args))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    from importlib.metadata import version

    report = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "mlx": version("mlx"),
                          "env_openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "child"},
              "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(table(results))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
