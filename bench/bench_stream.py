"""Images/s per thread of the training and evaluation streams on catalogue-sized files.

The files are generated here (3000x2250 photo-like content: smooth gradients, soft blobs and
sensor-like noise) as RGB JPEG (quality 90), CMYK JPEG, RGB PNG, 16-bit greyscale PNG (mode
I;16), and TIFF (uncompressed and LZW), so anyone can rerun it without a data set:

    python bench/bench_stream.py --count 16 --repeats 3 --json bench/results/stream.json

Each format is measured on the original files and on the copies fetch.py stores by default
(`--max-side 512`: longest side 512, JPEG quality 92 or PNG with alpha, made by
`mlx_clip.data.stored_copy.make_copy`), which is what training reads after a default fetch;
`--max-side 0` measures the originals only.

The training stream is `TrainStream.batches` (decode + random resized crop + flips +
normalise), the evaluation stream is `EvalStream` as train/evaluate.py runs it. Each case is
repeated; the JSON keeps every run, the median and the spread. `max_abs_diff` is the largest
difference of the evaluation stream's pixels from the processor on a full-size decode (after
normalisation; one grey level is about 0.015).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_clip.data.dataset import Item  # noqa: E402
from mlx_clip.data.image_files import inspect_image, sha256_hex  # noqa: E402
from mlx_clip.data.stored_copy import DEFAULT_MAX_SIDE, Original, make_copy  # noqa: E402
from mlx_clip.data.stream import AugmentConfig, EvalStream, TrainStream, draw_augmentations  # noqa: E402
from mlx_clip.models.preprocess import ImageProcessor  # noqa: E402

FORMATS = ("jpeg", "jpeg-cmyk", "png", "png-16bit", "tiff", "tiff-lzw")
MODEL_RESULT = Path(__file__).parent / "results" / "cpu_b32_fp32-2core-openblas-haswell.json"


def photo(seed: int, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3) that compresses like a photograph: gradients, soft shapes, fine noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= width
    y /= height
    out = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b, f = rng.uniform(-1, 1, 3)
        out[..., c] = 120 + 60 * a * x + 50 * b * y + 30 * np.sin(6.28 * (f + 1) * (x + y * b))
    for _ in range(6):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        out += blob[..., None] * rng.uniform(-80, 80, 3).astype(np.float32)
    out += rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_files(folder: Path, count: int, width: int, height: int) -> dict[str, list[str]]:
    """`count` images per format, the same `count` pictures in each format."""
    paths: dict[str, list[str]] = {name: [] for name in FORMATS}
    for k in range(count):
        image = Image.fromarray(photo(k, width, height))
        saves = {
            "jpeg": ("jpg", image, dict(quality=90)),
            "jpeg-cmyk": ("jpg", image.convert("CMYK"), dict(quality=90)),
            "png": ("png", image, {}),
            "png-16bit": ("png", Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257), {}),
            "tiff": ("tif", image, {}),
            "tiff-lzw": ("tif", image, dict(compression="tiff_lzw")),
        }
        for name, (ext, img, options) in saves.items():
            path = folder / f"{name}_{k:03d}.{ext}"
            img.save(path, **options)
            paths[name].append(str(path))
    assert Image.open(paths["png-16bit"][0]).mode == "I;16"
    return paths


def stored_copies(paths: list[str], max_side: int) -> list[str]:
    """The files fetch.py would store for `paths` with --max-side `max_side` (beside them)."""
    out = []
    for path in paths:
        data = Path(path).read_bytes()
        info = inspect_image(data)
        copy = make_copy(data, Original(sha256_hex(data), info.width, info.height, info.format), max_side)
        target = Path(path).with_name(f"{Path(path).stem}_max{max_side}.{copy.extension}")
        target.write_bytes(copy.data)
        out.append(str(target))
    return out


def train_rate(paths: list[str], processor: ImageProcessor, threads: int, batch: int) -> float:
    stream = TrainStream([Item(f"r{i}", Path(p), {}) for i, p in enumerate(paths)], None, None,
                         processor, processor.crop_height, batch, seed=0, threads=threads)
    augs = draw_augmentations(np.random.default_rng(0), len(paths), AugmentConfig())
    samples = [dict(index=np.array(i, np.int64), image_path=p.encode(), aug=a)
               for i, (p, a) in enumerate(zip(paths, augs))]
    start = time.perf_counter()
    n = sum(len(b["index"]) for b in stream.batches(samples, batch))
    return n / (time.perf_counter() - start)


def eval_rate(paths: list[str], processor: ImageProcessor, threads: int, batch: int) -> float:
    start = time.perf_counter()
    n = sum(len(b["index"]) for b in EvalStream(paths, processor, batch, threads))
    return n / (time.perf_counter() - start)


def max_abs_diff(paths: list[str], processor: ImageProcessor) -> float:
    """Largest |evaluation stream - processor on the full decode| over the files."""
    got = np.concatenate([b["pixels"] for b in EvalStream(paths, processor, 8, 2)])
    return float(max(np.abs(got[i] - processor([p])[0]).max() for i, p in enumerate(paths)))


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=16, help="images per format")
    parser.add_argument("--width", type=int, default=3000)
    parser.add_argument("--height", type=int, default=2250)
    parser.add_argument("--size", type=int, default=224, help="the model's image size")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="small, so the threads share even a short run")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--max-side", type=int, nargs="+", default=[0, DEFAULT_MAX_SIDE],
                        help="0: the original files; N: the copies fetch.py --max-side N stores")
    parser.add_argument("--note", default="", help="free text kept in the JSON (e.g. 'machine shared')")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    processor = ImageProcessor.from_dict({}, args.size)
    results: dict = {"machine": f"{platform.system()} {platform.machine()}", "cpu": cpu_name(),
                     "note": args.note, "settings": {k: v for k, v in vars(args).items() if k != "json"},
                     "cases": {}}
    if MODEL_RESULT.is_file():  # the model's rate on the same CPU, measured by mlx_vs_torch.py
        cited = json.loads(MODEL_RESULT.read_text())["cases"]
        results["model_images_per_s_cited"] = {"source": f"bench/results/{MODEL_RESULT.name}",
                                                **{case: cited[case]["mlx_images_per_s"] for case in cited}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), args.count, args.width, args.height)
        for fmt in args.formats:
            for side in args.max_side:
                files = stored_copies(paths[fmt], side) if side else paths[fmt]
                name = f"{fmt}@{side}" if side else fmt
                for stream, rate in (("train", train_rate), ("eval", eval_rate)):
                    for threads in args.threads:
                        rate(files[:2], processor, threads, args.batch)  # warm-up
                        runs = [rate(files, processor, threads, args.batch) / threads
                                for _ in range(args.repeats)]
                        row = {"format": fmt, "max_side": side, "stream": stream, "threads": threads,
                               "per_thread_images_per_s": statistics.median(runs),
                               "spread": [min(runs), max(runs)], "runs": runs}
                        results["cases"][f"{stream}/{name}/{threads}"] = row
                        print(f"{stream:5s} {name:14s} threads={threads} {row['per_thread_images_per_s']:7.1f} "
                              f"img/s per thread (runs {min(runs):.1f}-{max(runs):.1f})", flush=True)
            if 0 in args.max_side:
                diff = max_abs_diff(paths[fmt], processor)
                levels = diff * 255 * min(processor.image_std)  # one grey level of the narrowest channel
                results["cases"][f"eval_diff/{fmt}"] = {"format": fmt, "max_abs_diff": diff, "grey_levels": levels}
                print(f"eval  {fmt:9s} max |stream - full decode| = {diff:.4f} ({levels:.2f} grey levels)",
                      flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
