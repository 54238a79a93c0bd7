"""What a resized copy (fetch.py --max-side N) keeps and what it costs, per N.

For 3000x2250 photo-like files (bench_stream.py's generator) as JPEG, PNG and TIFF, and a JPEG
with detail at every scale (1/f noise, as natural images have), and each N:
the copy's bytes and the time to make it (once, at fetch time), the training and evaluation
streams' images/s per thread on the copies, and how far the pixels the model gets from the copy
are from the ideal ones (the processor, or the same crop, on the full-size decode of the original),
in grey levels (mean, 99th percentile, max), beside the same for the streams on the originals
(N = 0: reduced decoding there has its own small difference), for
evaluation at 224, 336 and 384 pixels and for training crops (the smallest crop the default
augmentation draws, 60 % of the area, where the copy's resolution matters most):

    python bench/bench_max_side.py --count 6 --json bench/results/max_side.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_stream import cpu_name, eval_rate, photo, train_rate  # noqa: E402
from mlx_clip.data.image_files import inspect_image, sha256_hex  # noqa: E402
from mlx_clip.data.stored_copy import Original, make_copy  # noqa: E402
from mlx_clip.data.stream import SCALE, AugmentConfig, EvalStream, TrainStream, augment, draw_augmentations  # noqa: E402
from mlx_clip.data.dataset import Item  # noqa: E402
from mlx_clip.models.preprocess import ImageProcessor, load_image  # noqa: E402

FORMATS = {"jpeg": ("jpg", dict(quality=90)), "png": ("png", {}), "tiff": ("tif", {}),
           "jpeg-detail": ("jpg", dict(quality=95))}


def detailed(seed: int, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3) with detail at every scale: noise with a 1/f amplitude spectrum, as natural
    images have, so a copy that drops detail the model would see shows it (photo() is smooth)."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    f[0, 0] = 1.0
    layers = []
    for _ in range(4):
        spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f
        layer = np.fft.irfft2(spectrum, s=(height, width))
        layers.append((layer - layer.mean()) / layer.std())
    out = np.stack([layers[0] + 0.6 * layers[c + 1] for c in range(3)], axis=-1) * 35 + 128
    return np.clip(out, 0, 255).astype(np.uint8)


def train_pixels(paths: list[str], processor: ImageProcessor, augs: np.ndarray) -> np.ndarray:
    stream = TrainStream([Item(f"r{i}", Path(p), {}) for i, p in enumerate(paths)], None, None,
                         processor, processor.crop_height, 4, seed=0, threads=2)
    samples = [dict(index=np.array(i, np.int64), image_path=p.encode(), aug=a)
               for i, (p, a) in enumerate(zip(paths, augs))]
    return np.concatenate([b["pixels"] for b in stream.batches(samples, 4)])


def eval_pixels(paths: list[str], processor: ImageProcessor) -> np.ndarray:
    return np.concatenate([b["pixels"] for b in EvalStream(paths, processor, 4, 2)])


def ideal_eval(paths: list[str], processor: ImageProcessor) -> np.ndarray:
    """The processor on the full-size decode: what evaluation would give with unlimited time."""
    return np.stack([processor([p])[0] for p in paths])


def ideal_train(paths: list[str], processor: ImageProcessor, augs: np.ndarray) -> np.ndarray:
    """The same crops cut from the full-size decode (no reduced decoding, no copy)."""
    size = processor.crop_height
    mean, std = np.asarray(processor.image_mean, np.float32), np.asarray(processor.image_std, np.float32)
    return np.stack([(augment(load_image(p), a, size).astype(np.float32) / 255 - mean) / std
                     for p, a in zip(paths, augs)])


def levels(a: np.ndarray, b: np.ndarray, processor: ImageProcessor) -> dict:
    """|a - b| in grey levels of the narrowest channel (pixels are normalised)."""
    d = np.abs(a - b) * 255 * min(processor.image_std)
    return {"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": float(d.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--sides", type=int, nargs="+", default=[336, 384, 448, 512, 640, 768])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = (224, 336, 384)
    processors = {s: ImageProcessor.from_dict({}, s) for s in sizes}
    results: dict = {"cpu": cpu_name(), "note": args.note, "settings": {k: v for k, v in vars(args).items()
                                                                        if k != "json"}, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for fmt in args.formats:
            ext, options = FORMATS[fmt]
            originals = []
            for k in range(args.count):
                path = root / f"{fmt}_{k}.{ext}"
                picture = detailed(k, 3000, 2250) if fmt.endswith("detail") else photo(k, 3000, 2250)
                Image.fromarray(picture).save(path, **options)
                originals.append(str(path))
            augs = draw_augmentations(np.random.default_rng(0), len(originals), AugmentConfig())
            augs[:, SCALE] = AugmentConfig().crop_min_area  # the most zoomed-in crop
            reference = {s: (ideal_eval(originals, p), ideal_train(originals, p, augs)) for s, p in processors.items()}
            for side in [0] + args.sides:
                if side:
                    paths, seconds, nbytes = [], [], []
                    for k, src in enumerate(originals):
                        data = Path(src).read_bytes()
                        info = inspect_image(data)
                        start = time.perf_counter()
                        copy = make_copy(data, Original(sha256_hex(data), info.width, info.height, info.format), side)
                        seconds.append(time.perf_counter() - start)
                        out = root / f"{fmt}_{k}_{side}.{copy.extension}"
                        out.write_bytes(copy.data)
                        paths.append(str(out))
                        nbytes.append(len(copy.data))
                else:
                    paths, seconds, nbytes = originals, [0.0], [Path(p).stat().st_size for p in originals]
                p224 = processors[224]
                train_rate(paths[:2], p224, 1, 2)
                row = {"format": fmt, "max_side": side, "copy_ms": 1000 * statistics.median(seconds),
                       "kbytes": statistics.median(nbytes) / 1000,
                       "train_per_thread": statistics.median(train_rate(paths, p224, 1, 2) for _ in range(args.repeats)),
                       "eval_per_thread": statistics.median(eval_rate(paths, p224, 1, 2) for _ in range(args.repeats))}
                for s, p in processors.items():
                    row[f"eval_{s}"] = levels(eval_pixels(paths, p), reference[s][0], p)
                    row[f"train_{s}"] = levels(train_pixels(paths, p, augs), reference[s][1], p)
                results["cases"][f"{fmt}/{side}"] = row
                print(f"{fmt:5s} N={side:4d} copy {row['copy_ms']:6.1f} ms {row['kbytes']:7.0f} kB  "
                      f"train {row['train_per_thread']:6.1f}/s eval {row['eval_per_thread']:6.1f}/s  "
                      + "  ".join(f"{k} {row[k]['mean']:.2f}/{row[k]['p99']:.1f}/{row[k]['max']:.0f}"
                                  for k in row if k.startswith(("eval_2", "eval_3", "train_2", "train_3"))),
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
