"""What the judging adds to the end of a run: retention on the bundled emoji (base model measured
once and cached, then the fine-tuned one) and one WiSE-FT mix (mixing the weights, scoring the mix),
for a CLIP ViT-B/32-shaped model with random weights (the timings do not depend on the weights):

    python bench/bench_retention.py --images 300 --json bench/results/retention_b32-2core.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mlx_clip  # noqa: E402,F401  (first: puts OpenBLAS under MLX on Linux)
from compare_env import blas_libraries, describe_machine, environment, peak_rss  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import mlx.core as mx

    from clip_fixtures import B32_TEXT, B32_VISION, make_hf_clip, write_openai_vocab
    from mlx_clip.models.clip import load
    from mlx_clip.train.retention import retention
    from mlx_clip.train.step import set_weights
    from mlx_clip.train.wise_ft import flat_weights, mixed

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_hf_clip(tmp / "b32", vision=B32_VISION, text=B32_TEXT, projection_dim=512,
                              vocab_folder=write_openai_vocab(tmp / "vocab"))
        model, base = load(folder, dtype="float32"), load(folder, dtype="float32")
        started = time.perf_counter()
        retention(model, lambda: base, str(folder), args.images, tmp / "cache")
        uncached = time.perf_counter() - started
        started = time.perf_counter()
        retention(model, lambda: base, str(folder), args.images, tmp / "cache")
        cached = time.perf_counter() - started
        started = time.perf_counter()
        set_weights(model, mixed(flat_weights(base), flat_weights(model), 0.5))
        mx.eval(model.parameters())
        mix_seconds = time.perf_counter() - started
    env = environment()
    result = {"machine": describe_machine(env), "environment": env, "blas": blas_libraries(),
              "model": "CLIP ViT-B/32 shape, random weights, float32", "images": args.images,
              "retention_first_run_s": round(uncached, 2), "retention_base_cached_s": round(cached, 2),
              "wise_ft_mix_weights_s": round(mix_seconds, 3), "peak_rss_bytes": peak_rss(),
              "load_average_1_5_15": os.getloadavg()}  # other jobs on the same cores slow every figure
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
