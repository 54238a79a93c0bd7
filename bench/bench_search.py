"""The search page's work at catalogue scale, on an index file of N random unit vectors (no model:
the vectors' values do not change the cost), with catalogue-like fields:

    python bench/bench_search.py --records 72000 --dims 512 --json bench/results/search-72k.json

Measures: reading the collection (vectors and fields) into memory, one text-free query (top 12 of
all), one query with a field filter, the facets, the map (PCA and 10 nearest neighbours of every
record, blocked), and the duplicate pairs (blocked, threshold 0.95), with the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_clip  # noqa: E402,F401  (OpenBLAS set up as the package does)
from bench.compare_env import blas_libraries, describe_machine, environment, peak_rss  # noqa: E402
from mlx_clip.use.collection_map import collection_map  # noqa: E402
from mlx_clip.use.neighbours import similar_pairs  # noqa: E402
from mlx_clip.use.store import CollectionInfo, IndexFile  # noqa: E402
from mlx_clip.use.vector_search import read_collections  # noqa: E402

PERIODS = ["Bronze Age", "Iron Age", "Roman", "Byzantine", "Medieval", "Ottoman"]
MATERIALS = ["bronze", "ceramic", "glass", "bone", "stone", "iron", "silver", "gold"]


def write_index(path: Path, count: int, dims: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    info = CollectionInfo(name="finds", model_id="mlx-clip/finds", model_source="/models/bench", family="clip",
                          dimensions=dims, label_field="material")
    with IndexFile(path, create=True) as index:
        cid = index.open_collection(info)
        for start in range(0, count, 4096):
            block = rng.normal(size=(min(4096, count - start), dims)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            rows = []
            for i, vector in enumerate(block, start):
                meta = {"record_id": f"r{i}", "title": f"find {i}", "image_path": f"/images/{i}.jpg",
                        "period": PERIODS[i % len(PERIODS)], "material": MATERIALS[i % len(MATERIALS)],
                        "site": f"site {i % 37}", "description": f"a find from trench {i % 500}"}
                rows.append((f"r{i}", vector, meta["title"], b"", meta))
            index.upsert(cid, rows)


def timed(work):
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=72000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-map", action="store_true", help="skip the map and the duplicates (minutes at 72,000)")
    args = parser.parse_args()
    env = environment()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.db"
        _, write_s = timed(lambda: write_index(path, args.records, args.dims))
        (found,), read_s = timed(lambda: read_collections([path]))
        query = found.matrix[123] + 0.1
        query /= np.linalg.norm(query)
        queries = [timed(lambda: found.search(query, 12))[1] for _ in range(5)]
        filtered = [timed(lambda: found.search(query, 12, {"period": "Roman", "material": "bronze"}))[1]
                    for _ in range(3)]
        _, facets_s = timed(found.facets)
        map_s = map_cached_s = pairs_s = None
        pairs: list = []
        passing = 0
        if not args.no_map:
            _, map_s = timed(lambda: collection_map(found))
            _, map_cached_s = timed(lambda: collection_map(found))
            (pairs, passing), pairs_s = timed(lambda: similar_pairs(found.matrix, 0.95, 100_000))
    result = {"records": args.records, "dims": args.dims, "machine": describe_machine(env), "environment": env,
              "blas": blas_libraries(), "write_index_s": write_s, "read_collection_s": read_s,
              "query_median_s": float(np.median(queries)), "filtered_query_median_s": float(np.median(filtered)),
              "facets_s": facets_s, "map_first_s": map_s, "map_cached_s": map_cached_s,
              "duplicates_s": pairs_s, "duplicate_pairs": len(pairs), "pairs_at_threshold": passing, "peak_rss_mb": peak_rss() / 2**20,
              "load_average": os.getloadavg()}
    print(json.dumps({k: v for k, v in result.items() if k not in ("environment", "blas")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
