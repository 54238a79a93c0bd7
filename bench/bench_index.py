#!/usr/bin/env python
"""Whole-collection embedding throughput (issue 26 item 3): does index.py run at the model's own rate?

  python bench/bench_index.py --model b32 --count 2000 --repeats 2 --json bench/results/index-b32-cpu-2core.json
  python bench/bench_index.py --model tiny --count 500 --repeats 1            # a quick look

Measured, interleaved (a), (b), (a), (b) ... because other work on a shared machine moves the rate:

(a) model: the model's own images/s on pre-decoded, preprocessed tensors (`embed_pixels` on
    batches of the same size the index uses), nothing else running in the process;
(b) index: `build_index` end to end on COUNT small files (the bundled emoji PNGs, or `--files
    jpeg`: 512x384 photo-like JPEGs, the size fetch.py stores by default, copied to COUNT files),
    into a fresh index file each time: the embedding stage's images/s (decode on threads while the
    model embeds, write each batch) and the whole command's (fetch's pass over the files, hashes,
    SQLite); with the resident memory (RSS) after each written batch, to show it stays flat.

The ratio (b)/(a) is the figure the issue asks for: >= 0.90. Each rate is the median of the
repeats. The model is a CLIP with random weights in the shape of ViT-B/32 (bench/compare_setup.py),
saved and loaded the way index.py loads any model folder. The JSON names the machine, the OpenBLAS
kernel threadpoolctl reports, and OPENBLAS_CORETYPE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import mlx_clip  # noqa: E402,F401  (first: OpenBLAS under MLX on Linux)
from compare_env import blas_libraries, describe_machine, environment  # noqa: E402
from compare_setup import CONFIGS, EOS, VOCAB  # noqa: E402

EMOJI = ROOT / "mlx_clip" / "demo" / "emoji" / "images"


def build_model(name: str, folder: Path) -> Path:
    import mlx.core as mx

    from mlx_clip.models.clip import CLIP
    from mlx_clip.models.config import CLIPConfig

    spec = CONFIGS[name]
    config = CLIPConfig.from_dict({"model_type": "clip", "projection_dim": spec["projection_dim"],
                                   "vision_config": dict(spec["vision"]),
                                   "text_config": dict(spec["text"], vocab_size=VOCAB, max_position_embeddings=77,
                                                       eos_token_id=EOS)})
    mx.random.seed(0)
    model = CLIP(config)
    mx.eval(model.parameters())
    return model.save(folder)


def write_collection(folder: Path, count: int, files: str) -> Path:
    """COUNT records, each with its own file (copies of a few dozen pictures)."""
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True)
    if files == "emoji":
        sources = sorted(EMOJI.glob("*.png"))[:256]
    else:
        from bench_stream import photo

        sources = []
        for k in range(32):
            path = folder / f"source_{k}.jpg"
            Image.fromarray(photo(k, 512, 384)).save(path, quality=92)
            sources.append(path)
    rows = []
    for i in range(count):
        source = sources[i % len(sources)]
        name = f"images/{i:06d}{source.suffix}"
        shutil.copy(source, folder / name)
        rows.append({"id": f"r{i}", "title": f"object {i}", "image_path": name})
    path = folder / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def model_rate(model, pixels, batches: int) -> float:
    """(a): images/s of embed_pixels on pre-decoded tensors."""
    import mlx.core as mx
    import numpy as np

    np.array(model.embed_pixels(pixels).astype(mx.float32))  # warm up (compile)
    started = time.perf_counter()
    for _ in range(batches):
        np.array(model.embed_pixels(pixels).astype(mx.float32))
    return batches * len(pixels) / (time.perf_counter() - started)


def index_rate(model_folder: Path, records: Path, work: Path, run: int, batch: int, threads: int) -> dict:
    """(b): build_index end to end into a fresh file; RSS after every written batch."""
    from mlx_clip.data.fetch_config import FetchConfig
    from mlx_clip.use import store
    from mlx_clip.use.embed_collection import IndexSettings, build_index

    memory: list[tuple[int, int]] = []
    upsert = store.IndexFile.upsert

    def measured(self, cid, rows):
        written = upsert(self, cid, rows)
        memory.append((written + (memory[-1][0] if memory else 0), rss()))
        return written

    store.IndexFile.upsert = measured
    try:
        settings = IndexSettings(model=str(model_folder), data=records, out=work / f"run{run}.db",
                                 fetch=FetchConfig(out=work / "fetched", path_field="image_path", progress=False),
                                 collection="bench", batch_size=batch, threads=threads, progress=False)
        summary = build_index(settings, log=lambda line: None)
    finally:
        store.IndexFile.upsert = upsert
    marks = {f"{p}%": memory[min(len(memory) - 1, max(0, round(len(memory) * p / 100) - 1))][1]
             for p in (10, 25, 50, 75, 100)}
    return {"embedded": summary.embedded, "embed_seconds": summary.embed_seconds, "seconds": summary.seconds,
            "embed_images_per_s": summary.embedded / summary.embed_seconds,
            "end_to_end_images_per_s": summary.embedded / summary.seconds, "rss_bytes_at": marks,
            "unreadable": len(summary.failures)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="b32", choices=sorted(CONFIGS))
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--files", default="emoji", choices=("emoji", "jpeg"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import numpy as np

    from mlx_clip.data.decode_threads import image_pixels

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["LLM_USER_PATH"] = str(work / "llm")  # index registers the model for llm: not in yours
        (work / "llm").mkdir()
        folder = build_model(args.model, work / "model")
        records = write_collection(work / "data", args.count, args.files)
        model = mlx_clip.load(folder)
        files = sorted((work / "data" / "images").iterdir())[:args.batch_size]
        pixels = np.stack([image_pixels(f, model.image_processor) for f in files])
        started = time.perf_counter()
        for f in files:
            image_pixels(f, model.image_processor)
        decode_one_thread = len(files) / (time.perf_counter() - started)
        batches = max(2, round(args.count / args.batch_size / 2))  # (a) runs about half as long as (b)
        runs = []
        for run in range(args.repeats):
            a = model_rate(model, pixels, batches)
            b = index_rate(folder, records, work, run, args.batch_size, args.threads)
            runs.append({"model_images_per_s": a, **b, "ratio": b["embed_images_per_s"] / a})
            print(f"run {run}: model {a:.3g} images/s; index embedding {b['embed_images_per_s']:.3g} images/s "
                  f"({b['embed_images_per_s'] / a:.2f}x), end to end {b['end_to_end_images_per_s']:.3g}; "
                  f"RSS {', '.join(f'{k} {v / 2**20:.0f} MiB' for k, v in b['rss_bytes_at'].items())}", flush=True)
    a_med = statistics.median(r["model_images_per_s"] for r in runs)
    b_med = statistics.median(r["embed_images_per_s"] for r in runs)
    e_med = statistics.median(r["end_to_end_images_per_s"] for r in runs)
    env = environment()
    result = {
        "machine": describe_machine(env), "environment": env,
        "openblas": [{k: lib.get(k) for k in ("filepath", "version", "architecture", "num_threads")}
                     for lib in blas_libraries() if lib.get("internal_api") == "openblas"],
        "model": args.model, "model_config": CONFIGS[args.model], "files": args.files, "count": args.count,
        "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
        "decode_images_per_s_one_thread": decode_one_thread,
        "model_images_per_s": a_med, "index_embed_images_per_s": b_med, "index_end_to_end_images_per_s": e_med,
        "ratio": b_med / a_med, "runs": runs, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(f"median: model {a_med:.3g} images/s, index {b_med:.3g} ({b_med / a_med:.2f}x), end to end {e_med:.3g}; "
          f"decode {decode_one_thread:.0f} images/s on one thread; {result['machine']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
