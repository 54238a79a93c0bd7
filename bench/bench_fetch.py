#!/usr/bin/env python3
"""Fetch throughput: images/s from a local aiohttp server on 127.0.0.1.

    python bench/bench_fetch.py                 # 500 images, four scenarios
    python bench/bench_fetch.py --images 200 --size 128

The server runs in a child process (so it does not share the GIL with the fetcher) and serves
``--images`` distinct JPEGs. Scenarios: no faults with the default limits (16 overall, 4 per
host; everything here is one host), no faults with 16 per host, and 20 ms latency with 10 % of
URLs answering 500 once before the image. Every scenario fetches into a fresh folder, so the
request count is bounded (images + faults) and the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_clip.data.fetch_config import FetchConfig  # noqa: E402
from mlx_clip.data.fetcher import fetch_records  # noqa: E402


def _make_images(count: int, size: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(base).resize((size, size), Image.BILINEAR))
        grain = rng.integers(-12, 13, smooth.shape)  # photo-like grain: realistic JPEG sizes
        image = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        images.append(buffer.getvalue())
    return images


def _serve(count: int, size: int, port_queue: multiprocessing.Queue) -> None:
    from aiohttp import web

    images = _make_images(count, size)
    failed_once: set[str] = set()

    async def image(request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        latency = float(request.query.get("latency", 0))
        if latency:
            await asyncio.sleep(latency)
        if request.query.get("flaky") and request.path_qs not in failed_once:
            failed_once.add(request.path_qs)
            return web.Response(status=500, text="try again")
        return web.Response(body=images[index], content_type="image/jpeg")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/img/{index}", image)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _scenario(name, port, workdir, count, config_overrides, latency=0.0, fault_rate=0.0):
    records = []
    every = round(1 / fault_rate) if fault_rate else 0
    for i in range(count):
        query = []
        if latency:
            query.append(f"latency={latency}")
        if every and i % every == 0:
            query.append("flaky=1")
        url = f"http://127.0.0.1:{port}/img/{i}" + ("?" + "&".join(query) if query else "")
        records.append({"id": f"{name}-{i}", "image_url": url})
    folder = Path(workdir) / name
    folder.mkdir()
    records_path = folder / "records.json"
    records_path.write_text(json.dumps(records))
    config = FetchConfig(out=folder / "out", progress=False, backoff=0.05, **config_overrides)
    started = time.perf_counter()
    summary = fetch_records(records_path, config)
    seconds = time.perf_counter() - started
    assert summary.fetched == count, summary
    return seconds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500, help="images per scenario")
    parser.add_argument("--size", type=int, default=384, help="image side in pixels")
    args = parser.parse_args()

    port_queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(
        target=_serve, args=(args.images, args.size, port_queue), daemon=True
    )
    server.start()
    try:
        port = port_queue.get(timeout=60)
        sample = _make_images(1, args.size)[0]
        print(f"{args.images} JPEGs of {args.size}x{args.size} (~{len(sample) / 1024:.0f} KiB) "
              f"from 127.0.0.1:{port}")
        scenarios = [
            ("default limits (16 overall, 4 per host)", {}, 0.0, 0.0),
            ("16 per host", {"per_host": 16}, 0.0, 0.0),
            ("16 per host, 20 ms latency", {"per_host": 16}, 0.02, 0.0),
            ("16 per host, 20 ms latency, 10% 500-then-ok", {"per_host": 16}, 0.02, 0.1),
        ]
        with tempfile.TemporaryDirectory() as workdir:
            for number, (name, overrides, latency, faults) in enumerate(scenarios):
                seconds, summary = _scenario(
                    f"s{number}", port, workdir, args.images, overrides, latency, faults
                )
                print(f"  {name:<46} {args.images / seconds:7.1f} images/s "
                      f"({seconds:.2f} s, {summary.downloads} downloads)")
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    main()
