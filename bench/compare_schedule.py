"""The order bench/mlx_vs_torch.py runs things in, and how repeated runs become one figure.

A shared or thermally throttling machine drifts over minutes, so the two frameworks are never
measured in two separate blocks: every repeat runs each case once per framework, back to back,
and the framework that goes first alternates between repeats. A case's figure is the median over
repeats with its spread (min, max); the MLX/PyTorch ratio is also taken per repeat, from the two
runs measured next to each other.
"""

from __future__ import annotations

import statistics

FRAMEWORKS = ("mlx", "torch")


def interleaved(cases: list[str], repeats: int) -> list[tuple[int, str, str]]:
    """(repeat, case, framework) in run order: MLX, PyTorch, then PyTorch, MLX, ... per case."""
    order = []
    for repeat in range(repeats):
        frameworks = FRAMEWORKS if repeat % 2 == 0 else FRAMEWORKS[::-1]
        for case in cases:
            order.extend((repeat, case, framework) for framework in frameworks)
    return order


def spread(values: list[float]) -> dict:
    """Median, min and max (and every value, in run order)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}


def summarise(runs: list[dict]) -> dict:
    """One case's runs (dicts of compare_setup.Result, both frameworks, all repeats) -> its report entry."""
    by = {fw: [r for r in runs if r["framework"] == fw] for fw in FRAMEWORKS}
    if any(len(by[fw]) != len(by[FRAMEWORKS[0]]) or not by[fw] for fw in FRAMEWORKS):
        raise ValueError("each repeat needs one run of each framework")
    entry: dict = {}
    for fw, results in by.items():
        entry[fw] = {
            "images_per_s": spread([r["images_per_s"] for r in results]),
            "peak_rss_bytes": spread([r["peak_rss_bytes"] for r in results]),
            "peak_allocated_bytes": (spread([r["peak_framework_bytes"] for r in results])
                                     if results[0]["peak_framework_bytes"] is not None else None),
            "first_loss": results[0]["first_loss"],
            "text_length": results[0]["text_length"],
            "device": results[0]["device"],
            "extra": results[0]["extra"],
            "runs": results,
        }
    entry["ratio"] = entry["mlx"]["images_per_s"]["median"] / entry["torch"]["images_per_s"]["median"]
    entry["paired_ratio"] = spread([m["images_per_s"] / t["images_per_s"] for m, t in zip(by["mlx"], by["torch"])])
    return entry
