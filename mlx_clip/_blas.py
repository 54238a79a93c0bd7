"""Put a fast BLAS under MLX on Linux before `mlx.core` is imported.

The Linux `mlx[cpu]` wheel links a reference BLAS that runs a 1024x1024 fp32 matmul at
about 5 GFLOPS. Debian's OpenBLAS (`apt-get install libopenblas0-pthread`) runs it at
about 170-250 GFLOPS on two cores. Loading OpenBLAS with RTLD_GLOBAL before MLX's own
library is loaded makes MLX's `cblas_*`/LAPACK calls resolve to it: the same effect as
`LD_PRELOAD`, without asking users to set it. macOS uses Accelerate and needs nothing.

Set `MLX_CLIP_BLAS=reference` to keep the wheel's BLAS, or `MLX_CLIP_BLAS=/path/lib.so`
to load another library.

OpenBLAS picks its kernels from the CPU's model number, and Debian's 0.3.21 does not know
recent CPUs (or a VM's generic "Intel Xeon Processor"): on an AVX-512 Xeon it falls back to its
SSE3 `Prescott` kernels, 4-8x slower. Where `OPENBLAS_CORETYPE` is unset and the CPU reports
AVX-512, it is set from the CPU's flags before OpenBLAS loads; a value already set is kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import warnings

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

loaded_blas: str | None = None
"""Path of the BLAS library put under MLX, or None when MLX uses its own."""


def _preloaded() -> str | None:
    for entry in os.environ.get("LD_PRELOAD", "").replace(":", " ").split():
        if "blas" in os.path.basename(entry).lower():
            return entry
    return None


_AVX512 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}  # what OpenBLAS's SkylakeX kernels use


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def kernel_for(flags: set[str]) -> str | None:
    """The OpenBLAS core type for an AVX-512 CPU (Cooperlake where it has bf16, else SkylakeX);
    None otherwise (OpenBLAS's own choice stands: it knows AVX2 CPUs as Haswell or Zen)."""
    if not _AVX512 <= flags:
        return None
    return "Cooperlake" if "avx512_bf16" in flags else "SkylakeX"


def _find_openblas() -> str | None:
    for path in _CANDIDATES:
        if os.path.exists(path):
            return path
    return ctypes.util.find_library("openblas")


def use_fast_blas() -> str | None:
    """Load OpenBLAS globally if this is Linux and MLX is not imported yet; return its path."""
    global loaded_blas
    if loaded_blas is not None:  # already done (a second call must not warn about mlx.core)
        return loaded_blas
    if not sys.platform.startswith("linux"):
        return None
    choice = os.environ.get("MLX_CLIP_BLAS", "openblas")
    if choice == "reference":
        return None
    preloaded = _preloaded()
    if preloaded:
        loaded_blas = preloaded
        return loaded_blas
    path = choice if os.path.sep in choice else _find_openblas()
    if path is None:
        warnings.warn(
            "OpenBLAS not found: MLX falls back to its slow reference BLAS (about 30x slower). "
            "Install it with `apt-get install libopenblas0-pthread`.",
            stacklevel=3,
        )
        return None
    if "mlx.core" in sys.modules:
        warnings.warn(
            "mlx.core was imported before mlx_clip, so OpenBLAS could not be put under it and "
            "MLX runs on its slow reference BLAS. Import mlx_clip first.",
            stacklevel=3,
        )
        return None
    if "OPENBLAS_CORETYPE" not in os.environ and (kernel := kernel_for(_cpu_flags())):
        os.environ["OPENBLAS_CORETYPE"] = kernel  # read once, when OpenBLAS loads
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    loaded_blas = path
    return loaded_blas


def describe_blas() -> str:
    """The BLAS under MLX in words, e.g. 'OpenBLAS 0.3.21 (SkylakeX kernels, 2 threads)'."""
    if loaded_blas is None:
        return "Accelerate" if sys.platform == "darwin" else "MLX's bundled reference BLAS"
    try:
        lib = ctypes.CDLL(loaded_blas)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        lib.openblas_get_config.restype = ctypes.c_char_p
        version = lib.openblas_get_config().decode().split()[1]
        core = lib.openblas_get_corename().decode()
        return f"OpenBLAS {version} ({core} kernels, {lib.openblas_get_num_threads()} threads)"
    except (OSError, AttributeError, IndexError):
        return loaded_blas


@contextlib.contextmanager
def single_threaded_blas():
    """OpenBLAS on one thread inside the block (for work already split across MLX streams)."""
    lib = None
    if loaded_blas is not None:
        try:
            lib = ctypes.CDLL(loaded_blas)
            before = lib.openblas_get_num_threads()
            lib.openblas_set_num_threads(1)
        except (OSError, AttributeError):
            lib = None
    try:
        yield
    finally:
        if lib is not None:
            lib.openblas_set_num_threads(before)
