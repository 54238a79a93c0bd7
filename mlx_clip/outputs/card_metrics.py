"""A model card's metrics read from any of the shapes it accepts: metrics.json's history, a
{before, after} pair, per-metric {before, after}, or a flat dict; with their intervals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping


def first_value(mapping: Mapping | None, *keys: str) -> Any:
    if not isinstance(mapping, Mapping):
        return None
    for key in keys:
        if mapping.get(key) not in (None, "", []):
            return mapping[key]
    return None


@dataclass
class Value:
    value: float | None
    interval: tuple[float, float] | None = None


def _as_pair(obj: Any) -> tuple[float, float] | None:
    if isinstance(obj, Mapping):
        obj = (first_value(obj, "low", "lo", "lower"), first_value(obj, "high", "hi", "upper"))
    if isinstance(obj, (list, tuple)) and len(obj) == 2 and all(isinstance(x, (int, float)) for x in obj):
        return float(obj[0]), float(obj[1])
    return None


def _value(raw: Any, siblings: Mapping, name: str) -> Value | None:
    interval = None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, Mapping):
        number = first_value(raw, "value", "mean", "estimate", "point")
        interval = _as_pair(first_value(raw, "ci95", "interval", "ci")) or _as_pair(
            (raw.get("ci95_low", raw.get("low")), raw.get("ci95_high", raw.get("high"))))
        raw = number
    if not isinstance(raw, (int, float)) or isinstance(raw, bool):
        return None
    interval = interval or _as_pair(first_value(siblings, f"{name}_ci95", f"{name}_interval", f"{name}_ci"))
    return Value(float(raw), interval)


_NOT_METRICS = {"epoch", "step", "steps", "seconds", "time", "elapsed", "lr", "learning_rate", "n", "count",
                "val_size", "n_val", "validation_size", "before", "after", "val_captions", "zero_shot_size",
                "zero_shot_classes", "train_loss", "eval_seconds", "train_images_per_s"}


def _metric_dict(raw: Any) -> dict[str, Value]:
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for name, item in raw.items():
        if name in _NOT_METRICS or re.search(r"_(ci95|interval|ci)(_low|_high)?$", name):
            continue
        if isinstance(item, Mapping) and not any(k in item for k in ("value", "mean", "estimate", "point")):
            for sub, subitem in item.items():  # {"zero_shot": {"accuracy": ...}} -> "zero_shot/accuracy"
                value = _value(subitem, item, sub)
                if value is not None:
                    out[f"{name}/{sub}"] = value
            continue
        value = _value(item, raw, name)
        if value is not None:
            out[name] = value
    return out


def split_metrics(metrics: Mapping | None) -> tuple[dict[str, Value], dict[str, Value], list[dict]]:
    """(before, after, per-epoch rows) from any of the accepted metrics shapes."""
    if not isinstance(metrics, Mapping):
        return {}, {}, []
    before = _metric_dict(first_value(metrics, "before", "baseline", "initial", "pretrained"))
    after = _metric_dict(first_value(metrics, "after", "final", "finetuned", "fine_tuned"))
    epochs = first_value(metrics, "epochs", "history", "per_epoch")
    rows: list[dict] = []
    if isinstance(epochs, list) and epochs and all(isinstance(e, Mapping) for e in epochs):
        if any("after" in e or "before" in e for e in epochs):
            before = before or _metric_dict(epochs[0].get("before"))
            after = after or _metric_dict(epochs[-1].get("after"))
            rows = [dict(epoch=e.get("epoch", i + 1), **_metric_dict(e.get("after"))) for i, e in enumerate(epochs)]
        else:
            rows = [dict(epoch=e.get("epoch", i), **_metric_dict(e)) for i, e in enumerate(epochs)]
            if not before and rows[0]["epoch"] == 0:
                before = _metric_dict(epochs[0])
            # finetune.py keeps the best epoch's weights (metrics["best_epoch"]), not the last's
            chosen = next((e for e in epochs if metrics.get("best_epoch") is not None
                           and e.get("epoch") == metrics["best_epoch"]), epochs[-1])
            after = after or _metric_dict(chosen)
    if not before and not after:  # {"recall@1": {"before": 0.3, "after": 0.5}, ...}
        pairs = {k: v for k, v in metrics.items() if isinstance(v, Mapping) and ("before" in v or "after" in v)}
        before = _metric_dict({k: v["before"] for k, v in pairs.items() if "before" in v})
        after = _metric_dict({k: v["after"] for k, v in pairs.items() if "after" in v})
    if not before and not after:
        after = _metric_dict(metrics)  # a flat dict of final metrics
    return before, after, rows
