"""On Linux, `import mlx_clip` puts OpenBLAS under MLX (the wheel's reference BLAS is ~30x slower)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
linux_with_openblas = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/usr/lib/x86_64-linux-gnu/libopenblas.so.0").exists()
    and not Path("/usr/lib/aarch64-linux-gnu/libopenblas.so.0").exists(),
    reason="Linux with Debian's OpenBLAS only (setup.sh installs it)")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env})


@linux_with_openblas
def test_openblas_is_loaded_before_mlx():
    done = _python("import mlx_clip, mlx_clip._blas as b, mlx.core as mx\n"
                   "a = mx.random.normal((256, 256)); mx.eval(a @ a)\n"
                   "maps = open('/proc/self/maps').read()\n"
                   "print(b.describe_blas()); print('mapped' if 'libopenblas' in maps else 'absent')")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OpenBLAS") and "mapped" in done.stdout


@linux_with_openblas
def test_opt_out_and_late_import_are_said():
    done = _python("import mlx_clip._blas as b; b.use_fast_blas(); print(b.describe_blas())", MLX_CLIP_BLAS="reference")
    assert "reference BLAS" in done.stdout
    done = _python("import mlx.core, mlx_clip")
    assert "imported before mlx_clip" in done.stderr  # a warning, not silence


def test_kernel_is_picked_from_avx512_flags_only():
    from mlx_clip._blas import kernel_for

    avx512 = {"fma", "avx2", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    assert kernel_for(avx512) == "SkylakeX"
    assert kernel_for(avx512 | {"avx512_bf16"}) == "Cooperlake"
    assert kernel_for({"fma", "avx2"}) is None  # OpenBLAS knows AVX2 CPUs itself
    assert kernel_for(avx512 - {"avx512bw"}) is None  # Knights Landing-like: not SkylakeX's set
    assert kernel_for(set()) is None


@linux_with_openblas
def test_a_set_coretype_is_kept_and_an_unset_one_follows_the_flags():
    import os

    from mlx_clip._blas import _cpu_flags, kernel_for

    code = "import mlx_clip._blas as b; b.use_fast_blas(); print(b.describe_blas())"
    kept = _python(code, OPENBLAS_CORETYPE="Haswell")
    assert "(Haswell kernels" in kept.stdout, kept.stdout + kept.stderr
    unset = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    picked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=unset)
    expected = kernel_for(_cpu_flags())
    if expected is None:
        pytest.skip("no AVX-512 on this CPU: OpenBLAS's own choice stands")
    assert f"({expected} kernels" in picked.stdout, picked.stdout + picked.stderr
