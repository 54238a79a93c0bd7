#!/usr/bin/env python
"""MLX (this project's code) vs PyTorch (transformers CLIPModel) on the same CLIP, batch and data.

  python bench/mlx_vs_torch.py --config b32 --batch 32 --repeats 5
  python bench/mlx_vs_torch.py --config tiny --steps 1 --json /tmp/smoke.json     # CI smoke test

Cases: a full training step (AdamW, contrastive loss), a training step with the text tower
locked, and image-embedding inference. Each (framework, case) runs in its own child process,
so peak memory is measured cleanly and the two thread pools never compete; the runs are
interleaved (MLX, PyTorch, PyTorch, MLX, ... see compare_schedule.py) and repeated
(`--repeats`), and each figure is the median over repeats with its min and max. Both frameworks
start from the same weights (transformers' initialisation, converted) and see the same token
ids and pixels. Reports images/s (each run: median over measured steps after warm-up), peak
memory, achieved GFLOPS and the MLX/PyTorch ratio, as a table and as JSON; the JSON also names
the CPU and its vector flags, OPENBLAS_CORETYPE, each side's BLAS and kernel, and the versions.

Device auto: Metal vs MPS on a Mac, CUDA vs CUDA where present, CPU vs CPU otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_env import describe_machine, environment, gemm_gflops, limit_instruction_set, save_report  # noqa: E402
from compare_schedule import interleaved, summarise  # noqa: E402
from compare_setup import (CASES, CONFIGS, Settings, add_torch_adamw_flag, flops_per_pair,  # noqa: E402
                           initial_weights_path)
from compare_sides import run_isolated  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="b32", help="model size (default b32: ViT-B/32)")
    parser.add_argument("--batch", type=int, default=32, help="images (and captions) per step (default 32)")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="compute precision for both frameworks (bfloat16 is for GPUs; slow on CPUs)")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per run (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per framework and case, interleaved; figures are medians (default 3)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto",
                        help="auto: Metal/MPS on a Mac, CUDA where present, else CPU; cpu forces the CPU")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: cap OpenBLAS (MLX) and MKL, oneDNN and ATen (PyTorch) at AVX2, so an AVX-512 "
                             "machine measures what an AVX2-only CPU runs (default native)")
    parser.add_argument("--caption-tokens", default="8,40",
                        help="min,max tokens per synthetic caption, BOS and EOS included (default 8,40)")
    add_torch_adamw_flag(parser)
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mlx-clip-bench",
                        help="where the shared initial weights are kept")
    args = parser.parse_args(argv)
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.case_list) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if args.isa == "avx2" and platform.machine().lower() not in ("x86_64", "amd64"):
        parser.error(f"--isa avx2 stands an x86 CPU in for an AVX2-only one; this is {platform.machine()}")
    if args.repeats < 1 or args.steps < 1:
        parser.error("--repeats and --steps must be at least 1")
    return args


def add_rates(entry: dict, settings: Settings, case: str) -> None:
    """GFLOP per pair (each side's own text length) and achieved GFLOPS at the median rate."""
    for side in ("mlx", "torch"):
        gflop = flops_per_pair(settings, entry[side]["text_length"], case) / 1e9
        entry[side]["gflop_per_pair"] = gflop
        entry[side]["gflops"] = gflop * entry[side]["images_per_s"]["median"]
    on_gpu = entry["mlx"]["device"].endswith("gpu") and entry["torch"]["peak_allocated_bytes"] is not None
    entry["peak_compared"] = "device memory allocated" if on_gpu else "process resident memory"
    entry["peak_bytes"] = {side: entry[side]["peak_allocated_bytes" if on_gpu else "peak_rss_bytes"]["median"]
                           for side in ("mlx", "torch")}


def row(case: str, entry: dict) -> str:
    def rate(side):
        s = entry[side]["images_per_s"]
        return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"

    paired = entry["paired_ratio"]
    return (f"{case:<16} {rate('mlx'):>22} {rate('torch'):>22} {entry['ratio']:>5.2f}x "
            f"({paired['min']:.2f}-{paired['max']:.2f}) {entry['mlx']['gflops']:>7.1f} {entry['torch']['gflops']:>7.1f} "
            f"{entry['peak_bytes']['mlx'] / 2**30:>7.2f}G {entry['peak_bytes']['torch'] / 2**30:>7.2f}G")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    low, high = (int(x) for x in args.caption_tokens.split(","))
    settings = Settings(args.config, args.batch, args.precision, args.steps, args.warmup, (low, high), args.device,
                        repeats=args.repeats, torch_adamw=args.torch_adamw)
    args.cache.mkdir(parents=True, exist_ok=True)
    limit_instruction_set(args.isa)  # before any child starts or OpenBLAS loads here
    init = initial_weights_path(settings, args.cache)
    report: dict = {"environment": environment(), "isa": args.isa, "settings": asdict(settings), "run_order": [],
                    "cases": {}}
    print(f"{describe_machine(report['environment'])} | config {settings.config}, batch {settings.batch}, "
          f"{settings.precision}, {settings.repeats} interleaved repeats")
    runs: dict[str, list[dict]] = {case: [] for case in args.case_list}
    for repeat, case, framework in interleaved(args.case_list, settings.repeats):
        result = run_isolated(framework, settings, case, init)
        runs[case].append(result)
        report["run_order"].append(f"{repeat}:{case}:{framework}")
        print(f"  repeat {repeat + 1}/{settings.repeats} {case:<16} {framework:<5} {result['images_per_s']:.2f} images/s",
              flush=True)
    print(f"{'case':<16} {'MLX img/s (min-max)':>22} {'torch img/s (min-max)':>22} {'ratio (paired min-max)':>20} "
          f"{'MLX GF/s':>7} {'torch GF/s':>7} {'MLX peak':>8} {'torch peak':>8}")
    for case in args.case_list:
        entry = report["cases"][case] = summarise(runs[case])
        add_rates(entry, settings, case)
        print(row(case, entry))
    first = next(iter(report["cases"].values()))
    report["versions"] = {"mlx": first["mlx"]["extra"]["mlx_version"], "torch": first["torch"]["extra"]["torch_version"],
                          "transformers": first["torch"]["extra"]["transformers_version"]}
    report["blas"] = {"mlx": first["mlx"]["extra"]["blas"], "torch": first["torch"]["extra"]["blas"],
                      "torch_cpu_capability": first["torch"]["extra"]["cpu_capability"]}
    print(f"MLX {report['versions']['mlx']} on {report['blas']['mlx']}; PyTorch {report['versions']['torch']} on "
          f"{report['blas']['torch']} ({report['blas']['torch_cpu_capability']}), "
          f"{first['torch']['extra']['threads']} threads")
    peak = report["mlx_gemm_gflops"] = gemm_gflops(first["mlx"]["device"].split("-")[1])
    for entry in report["cases"].values():
        entry["ceiling_images_per_s"] = peak / entry["mlx"]["gflop_per_pair"]
        entry["mlx_share_of_ceiling"] = entry["mlx"]["images_per_s"]["median"] / entry["ceiling_images_per_s"]
    print(f"fp32 GEMM through MLX: {peak:.0f} GFLOPS; MLX share of that ceiling: " + ", ".join(
        f"{c} {e['mlx_share_of_ceiling']:.0%}" for c, e in report["cases"].items()))
    print(f"peak = {', '.join(sorted({e['peak_compared'] for e in report['cases'].values()}))} of the process "
          "running that case (weights, activations, optimizer state), median over repeats")
    save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
