"""The verdict: did fine-tuning help? One sentence in plain words, from the held-out test set.

Each area (retrieval, zero-shot tagging, image-to-image search) is judged by its paired change
and 95 % interval (mlx_clip.train.scores): an interval above 0 is "helped", below 0 "got worse"
(a regression, shown in red), one that includes 0 "no distinguishable change"; the words come
from the interval, never from the point estimate. Retention (mlx_clip.train.retention) says how
much of the base model's general skill was kept. metrics.json's "verdict" holds the findings and
the sentence; the console, the report and the model card all show that one sentence.
"""

from __future__ import annotations

from typing import Sequence

from . import scores
from .bootstrap import MIN_ITEMS, TOO_FEW, signed_text, words_for
from .metric_names import HEADLINE, ci_key


def findings(before, after, keys: Sequence[str] = tuple(HEADLINE)) -> list[dict]:
    """Per area the evaluation has: its change, interval, words and whether it is a regression."""
    out = []
    for key in keys if before is not None and after is not None else ():
        change = scores.change(before, after, key)
        if change is None:
            continue
        area, measure = HEADLINE[key]
        items = change[2]
        words = words_for(change[1], items)
        out.append({"area": area, "key": key, "measure": measure, "change": change[0], "ci95": change[1],
                    "words": words, "regression": words == "worse", "items": items})
    return out


def retention_finding(retention: dict | None) -> dict | None:
    """The retention finding: the percentage kept, a regression when a skill's change is below 0."""
    if not retention or retention.get("kept_percent") is None:
        return None
    worse = [s for s in retention["scores"].values() if s["words"] == "worse"]
    return {"area": "retention", "key": "retention", "kept_percent": retention["kept_percent"],
            "at_chance": retention.get("at_chance", False),
            "regression": bool(worse), "out_of_domain": retention.get("out_of_domain", True),
            "worse": [f"{s['measure']} {signed_text(s['change'], s[ci_key('change')])}" for s in worse]}


def finding_text(found: dict, first: bool, where: str) -> str:
    """One clause of the sentence, e.g. "zero-shot tagging got worse: -0.060 [-0.100, -0.020]"."""
    if found["key"] == "retention":
        text = ("what it kept of the base model's general skill is not measurable: the base model scores at chance "
                "on the bundled emoji" if found.get("at_chance") else
                f"it kept {found['kept_percent']:.0f} % of the base model's general skill (bundled emoji: image → "
                "name and category)")
        if found["worse"]:
            text += "; forgetting is measurable: " + "; ".join(found["worse"])
        if not found["out_of_domain"]:
            text += " (not out-of-domain: this run trained on the emoji set)"
        return text
    low, high = found["ci95"]
    if found["words"] == TOO_FEW:
        return (f"{found['area']}: {TOO_FEW} ({found['items']} scored items, fewer than {MIN_ITEMS})")
    amount = f"{found['change']:+.3f}" + (f" {found['measure']}" if first else "") + f" [{low:+.3f}, {high:+.3f}]"
    if first:
        amount += f" on {where}"
    if found["words"] == "better":
        return (f"Fine-tuning helped {found['area']}: " if first else f"{found['area']} improved: ") + amount
    if found["words"] == "worse":
        return (f"Fine-tuning hurt {found['area']}: " if first else f"{found['area']} got worse: ") + amount
    return (f"No distinguishable change in {found['area']}: " if first
            else f"{found['area']}: no distinguishable change, ") + amount


def verdict(before, after, set_name: str, size: int, retention: dict | None = None,
            keys: Sequence[str] = tuple(HEADLINE)) -> dict:
    """metrics.json's "verdict": {"set", "size", "findings", "line"} from two evaluations of the same items."""
    found = findings(before, after, keys)
    kept = retention_finding(retention)
    if kept:
        found.append(kept)
    where = f"{size} {set_name} images"
    clauses = [finding_text(f, i == 0, where) for i, f in enumerate(found)]
    line = "; ".join(clauses) if clauses else "no verdict: nothing was measured before and after"
    if set_name != "test" and clauses:
        line += " (validation set: it picked the epoch, so this is optimistic; use --test-fraction)"
    return {"set": set_name, "size": size, "findings": found, "line": line,
            "regressions": [f["area"] for f in found if f["regression"]]}
