"""WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): mix the base and the
fine-tuned weights, theta = (1 - a) base + a fine-tuned, and keep the a that a rule picks on
VALIDATION (never on test): `gain` keeps the best validation mean recall@1; `balanced` keeps the
best validation mean recall@1 among the mixes that keep at least 95 % of the base model's general
skill (retention, mlx_clip.train.retention), and the mix with the most retention when none does
(the best gain when retention is not measurable: a base model at chance on the bundled emoji).
a = 0 is the base model, a = 1 the fine-tuned one. With LoRA the saved model has the adapters
merged, so the merged weights are mixed.
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

import mlx.core as mx
from mlx.utils import tree_flatten

from ..errors import InputError
from .metric_names import MEAN_R1

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
PICK_RULES = ("gain", "balanced")
BALANCED_KEEP = 95.0  # percent of the base model's retention a `balanced` mix must keep


def alpha_list(text: str) -> list[float]:
    """--wise-ft: comma-separated mixing weights in [0, 1], or `default` (0,0.25,0.5,0.75,1)."""
    if text.strip().lower() in ("default", "on", "yes"):
        return list(DEFAULT_ALPHAS)
    try:
        alphas = sorted({float(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise argparse.ArgumentTypeError(f"give comma-separated numbers in [0, 1] or 'default', got {text!r}") from None
    try:
        check_alphas(alphas)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return alphas


def check_alphas(alphas: Sequence[float], pick: str = "gain", retention_images: int = 1) -> None:
    """One line for settings that cannot work, said before training."""
    if any(not 0 <= a <= 1 for a in alphas):
        raise InputError(f"wise_ft: every mixing weight must be in [0, 1], got {list(alphas)}")
    if pick not in PICK_RULES:
        raise InputError(f"wise_ft_pick must be one of {', '.join(PICK_RULES)}, got {pick!r}")
    if alphas and pick == "balanced" and retention_images < 1:
        raise InputError("--wise-ft-pick balanced weighs retention: keep --retention-images above 0")


def mixed(base: dict[str, mx.array], tuned: dict[str, mx.array], alpha: float) -> dict[str, mx.array]:
    """(1 - alpha) base + alpha tuned for every weight both have with the same shape (others: tuned)."""
    out = {}
    for name, value in tuned.items():
        other = base.get(name)
        out[name] = value if other is None or other.shape != value.shape else (1 - alpha) * other + alpha * value
    return out


def flat_weights(model) -> dict[str, mx.array]:
    return dict(tree_flatten(model.parameters()))


def sweep(alphas: Sequence[float], measure: Callable[[float], dict]) -> list[dict]:
    """[{"alpha", "mean_R@1", "retention_percent"}] for each a; `measure(a)` loads that mix and scores it."""
    return [{"alpha": float(a), **measure(float(a))} for a in alphas]


def retention_text(point: dict, short: bool = False) -> str:
    """A mix's retention as the console (and, `short`, a report cell) says it: never a share of a
    chance-level score (metrics.json keeps the number beside `retention_at_chance`)."""
    if point.get("retention_at_chance"):
        return ("retention not measurable (base at chance)" if short
                else "retention not measurable (the base model scores at chance on the bundled emoji)")
    if point.get("retention_percent") is None:
        return "retention not measured"
    return f"retention {point['retention_percent']:.0f} %"


def pick(points: Sequence[dict], rule: str) -> tuple[dict, str]:
    """The chosen point and, in words, why (for metrics.json and the card)."""
    scored = [p for p in points if p.get(MEAN_R1) is not None]
    if not scored:
        raise InputError("wise-ft: no mix was scored on validation (it needs a validation set)")
    if rule == "gain":
        best = max(scored, key=lambda p: (p[MEAN_R1], p["alpha"]))
        return best, f"gain: the best validation mean recall@1 ({best[MEAN_R1]:.3f}) of the mixes"
    if not any(p.get("retention_percent") is not None and not p.get("retention_at_chance") for p in scored):
        best = max(scored, key=lambda p: (p[MEAN_R1], p["alpha"]))
        return best, (f"balanced, with retention not measurable (the base model scores at chance on the bundled "
                      f"emoji, or retention failed): the best validation mean recall@1 ({best[MEAN_R1]:.3f})")
    keeping = [p for p in scored if (p.get("retention_percent") or 0) >= BALANCED_KEEP]
    if keeping:
        best = max(keeping, key=lambda p: (p[MEAN_R1], p["alpha"]))
        return best, (f"balanced: the best validation mean recall@1 ({best[MEAN_R1]:.3f}) among the mixes that "
                      f"keep at least {BALANCED_KEEP:g} % of the base model's retention "
                      f"(this one keeps {best['retention_percent']:.0f} %)")
    best = max(scored, key=lambda p: (p.get("retention_percent") or 0, p[MEAN_R1]))
    return best, (f"balanced: no mix keeps {BALANCED_KEEP:g} % of the base model's retention; this one keeps the "
                  f"most ({best.get('retention_percent') or 0:.0f} %)")
