#!/usr/bin/env python
"""Evaluation's image pipeline: each image on ordered_map's threads (EvalStream now, the one
decoding helper the index and llm use) against the mlx.data pipeline it replaced (a batch per
thread: `buffer_from_vector(...).sample_transform(load).batch(B).ordered_prefetch(4, threads)`,
rebuilt here so the comparison can be rerun).

  python bench/bench_eval_decode.py --files original --count 48 --repeats 5 --model b32 --json bench/results/eval_decode-2core.json

Both decode each image with the same function (EvalStream.pixels), so their pixels must be equal
(checked). Measured interleaved, before, after, before ... (a shared machine's load moves the
rate); medians. `--model b32` also times the embedding (train/evaluate.py's embed_eval_images,
and the same loop over the old pipeline) with a random-weight ViT-B/32 (bench/compare_setup.py).
Files: `stored` = 512x384 JPEGs (what fetch.py stores by default), `original` = 3000x2250 JPEGs
(decoded at a reduced scale), photo-like (bench/bench_stream.py), copies of 8 pictures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mlx_clip  # noqa: E402,F401  (first: OpenBLAS under MLX on Linux)
import mlx.core as mx  # noqa: E402
import mlx.data as dx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from compare_env import blas_libraries, describe_machine, environment  # noqa: E402
from mlx_clip.data.stream import EvalStream, decode_batch  # noqa: E402
from mlx_clip.models.preprocess import ImageProcessor  # noqa: E402

SIZES = {"stored": (512, 384), "original": (3000, 2250)}


def write_files(folder: Path, kind: str, count: int) -> list[str]:
    from bench_stream import photo

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(min(8, count)):
        Image.fromarray(photo(k, *SIZES[kind])).save(folder / f"{k:05d}.jpg", quality=90)
    for i in range(8, count):
        shutil.copy(folder / f"{i % 8:05d}.jpg", folder / f"{i:05d}.jpg")
    return [str(folder / f"{i:05d}.jpg") for i in range(count)]


def before_batches(paths: list[str], processor: ImageProcessor, batch: int, threads: int):
    """The replaced pipeline: mlx.data, one batch per prefetch thread."""
    stream = EvalStream([], processor)
    stream.min_side = EvalStream(paths[:1], processor).min_side

    def load(sample: dict) -> dict:
        return dict(sample, pixels=stream.pixels(bytes(sample["image_path"]).rstrip(b"\0").decode()))

    samples = [dict(index=np.array(i, np.int64), image_path=p.encode()) for i, p in enumerate(paths)]
    for out in dx.buffer_from_vector(samples).sample_transform(load).batch(batch).ordered_prefetch(4, threads):
        yield decode_batch(out)


def after_batches(paths: list[str], processor: ImageProcessor, batch: int, threads: int):
    return iter(EvalStream(paths, processor, batch, threads))


def run(batches, model) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    out = [np.array(model.embed_pixels(b["pixels"]).astype(mx.float32)) if model is not None else b["pixels"]
           for b in batches]
    return time.perf_counter() - started, np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", choices=sorted(SIZES), default="original")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=4, help="finetune's default --threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", choices=["none", "b32"], default="none")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp) / "files", args.files, args.count)
        model = None
        if args.model != "none":
            from bench_index import build_model

            model = mlx_clip.load(build_model(args.model, Path(tmp) / "model"))
        processor = model.image_processor if model is not None else ImageProcessor()
        cases = {"before (mlx.data, a batch per thread)": before_batches,
                 "after (ordered_map, an image per thread)": after_batches}
        for make in cases.values():  # warm up (the model compiles)
            run(make(paths[:8], processor, args.batch_size, args.threads), model)
        seconds: dict[str, list[float]] = {name: [] for name in cases}
        outputs = {}
        for _ in range(args.repeats):
            for name, make in cases.items():
                took, outputs[name] = run(make(paths, processor, args.batch_size, args.threads), model)
                seconds[name].append(took)
        first, second = outputs.values()
        env = environment()
        result = {
            "machine": describe_machine(env), "environment": env, "blas": blas_libraries(),
            "files": args.files, "size": SIZES[args.files], "count": args.count, "batch_size": args.batch_size,
            "threads": args.threads, "model": args.model, "repeats": args.repeats,
            "identical_output": bool(np.array_equal(first, second)),
            "cases": {name: {"median_seconds": statistics.median(s), "images_per_s": args.count / statistics.median(s),
                             "seconds": s} for name, s in seconds.items()},
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    for name, case in result["cases"].items():
        print(f"{name}: median {case['median_seconds']:.2f} s = {case['images_per_s']:.1f} images/s "
              f"(runs {', '.join(f'{s:.2f}' for s in case['seconds'])})")
    print(f"identical output: {result['identical_output']}; {result['machine']}; "
          f"OpenBLAS kernels {[b.get('architecture') for b in result['blas'] if b.get('internal_api') == 'openblas']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
