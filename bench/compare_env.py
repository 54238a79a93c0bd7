"""The machine a bench/mlx_vs_torch.py report was measured on, and its matmul ceiling through MLX.

Results move with the CPU's vector units and with each side's kernel choice, so the JSON names
them. `--isa avx2` makes an AVX-512 machine stand in for an AVX2-only one on *both* sides:
`OPENBLAS_CORETYPE=Haswell` alone limits MLX's OpenBLAS but leaves PyTorch's MKL, oneDNN and ATen
kernels on AVX-512, which is not what an AVX2 laptop or server runs.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "neon", "asimd")
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "MLX_CLIP_BLAS", "LD_PRELOAD", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
# The documented switches that cap each library at AVX2 (OpenBLAS, Intel MKL, PyTorch's ATen, oneDNN).
AVX2_ONLY = {"OPENBLAS_CORETYPE": "Haswell", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"}


def limit_instruction_set(isa: str) -> dict[str, str]:
    """Set (in this process, so every child inherits it) the variables that cap both sides at `isa`."""
    if isa == "native":
        return {}
    os.environ.update(AVX2_ONLY)
    return dict(AVX2_ONLY)


def cpu_info(cpuinfo: str | None = None) -> dict:
    """CPU model and the vector-unit flags that decide the BLAS kernels (from /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model") and model in (platform.processor(), platform.machine()):
            model = value.strip()
        if key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def environment() -> dict:
    """Everything about this machine and process setup a reader needs to compare two reports."""
    return {
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu_info(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "python": sys.version.split()[0],
        "blas_environment": {name: os.environ[name] for name in BLAS_ENV if name in os.environ},
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


def describe_machine(env: dict) -> str:
    flags = ", ".join(flag for flag, present in env["cpu"]["flags"].items() if present) or "no listed flags"
    coretype = env["openblas_coretype"]
    return (f"{env['system']}, {env['cpu']['model']} ({flags}), {env['usable_cores']} of {env['cores']} cores"
            + (f", OPENBLAS_CORETYPE={coretype}" if coretype else ""))


def peak_rss() -> int:
    """This process's peak resident memory in bytes (ru_maxrss is bytes on macOS, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def blas_libraries() -> list[dict]:
    """threadpoolctl's view of the BLAS/OpenMP libraries loaded in this process (OpenBLAS names
    its kernel as `architecture`, e.g. Haswell or SkylakeX)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "prefix", "filepath", "version", "num_threads", "architecture",
            "threading_layer")
    return [{k: lib[k] for k in keep if k in lib} for lib in threadpool_info()]


def gemm_gflops(device: str) -> float:
    """This machine's fp32 matmul rate through MLX (the ceiling's yardstick)."""
    import mlx_clip  # noqa: F401  (first: OpenBLAS under MLX on Linux)
    import mlx.core as mx

    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    n = 4096 if device == "gpu" else 1536
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b, a @ b)
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        mx.eval(a @ b)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def save_report(path, report: dict) -> None:
    """Every bench script's closing step: the report as indented JSON at `path` (if given), said once."""
    if path:
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
