"""Peak memory of one picture from a small file (issue 24): a 12,000 x 12,000 PNG of a few hundred
KB, and 1 x 20,000 / 1 x 100,000 PNGs of a few hundred bytes (and a 10,000 x 10,000 PNG, exactly
the pixel budget, for what an admitted picture may cost), through what fetch does with a
download (`inspect_image`) and what `embed_images` / `llm embed` do (`ImageProcessor()(path)`).

Each case runs in a fresh child process (peak RSS is per process) with its address space capped
(--limit-gb) so that a runaway allocation ends in MemoryError instead of the machine's OOM killer.
Run it against another tree for a before/after comparison:

    python bench/bench_image_memory.py --code /path/to/old/checkout --out bench/results/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_env import blas_libraries, describe_machine, environment  # noqa: E402

CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[3]) << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
path, step = sys.argv[1], sys.argv[2]
start = time.perf_counter()
try:
    if step == "fetch":
        from mlx_clip.data.image_files import inspect_image
        inspect_image(open(path, "rb").read())
    else:
        from mlx_clip.models.preprocess import ImageProcessor
        ImageProcessor()([path])
    outcome = "decoded"
except MemoryError:
    outcome = "MemoryError"
except Exception as err:
    outcome = f"refused: {type(err).__name__}: {err}"[:200]
try:  # VmHWM starts afresh at exec; ru_maxrss would keep the parent's peak
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) * 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({"outcome": outcome, "peak_rss_mb": round(peak / 2**20), "seconds": round(time.perf_counter() - start, 2)}))
"""


def make_pictures(folder: Path) -> dict[str, Path]:
    """The issue's pictures: big and flat (compresses to a few hundred KB), and one pixel wide."""
    rng = np.random.default_rng(0)
    big = np.zeros((12000, 12000, 3), np.uint8)
    big[::97, ::89] = rng.integers(0, 255, big[::97, ::89].shape, dtype=np.uint8)
    out = {"png_12000x12000": folder / "big.png", "png_10000x10000": folder / "at_budget.png"}
    Image.fromarray(big).save(out["png_12000x12000"], optimize=True)
    Image.fromarray(big[:10000, :10000]).save(out["png_10000x10000"])  # exactly the budget: admitted
    del big
    for height in (20000, 100000):
        out[f"png_1x{height}"] = folder / f"tall{height}.png"
        Image.new("RGB", (1, height), (200, 100, 50)).save(out[f"png_1x{height}"], optimize=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(Path(__file__).resolve().parents[1]), help="tree to import mlx_clip from")
    parser.add_argument("--limit-gb", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_pictures(Path(tmp)).items():
            for step in ("fetch", "embed"):
                env = dict(os.environ, PYTHONPATH=args.code)
                done = subprocess.run([sys.executable, "-c", CHILD, str(path), step, str(args.limit_gb)],
                                      env=env, capture_output=True, text=True, cwd=tmp)
                result = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else \
                    {"outcome": f"exit {done.returncode}: {done.stderr.strip()[-200:]}"}
                rows.append(dict(picture=name, file_bytes=path.stat().st_size, step=step, **result))
                print(json.dumps(rows[-1]), flush=True)
    env = environment()
    report = {"machine": describe_machine(env), "environment": env, "blas": blas_libraries(), "code": args.code,
              "results": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
