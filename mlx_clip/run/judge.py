"""The end of a run's judging: the WiSE-FT mix (when asked), what the model kept of the base
model's general skill (retention) and the verdict from the held-out test set."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import mlx.core as mx

from ..models.clip import CLIP, load
from ..models.weights import resolve_model_folder
from ..outputs.export import save_run_model
from ..outputs.run_paths import RunPaths
from ..outputs.verdict import verdict
from ..train.evaluate import EvalDetails, evaluate
from ..train.metric_names import MEAN_R1, ci_key
from ..train.retention import retention
from ..train.step import set_weights
from ..train.wise_ft import flat_weights, mixed, pick, sweep
from .prepare import Prepared


class BaseModel:
    """The run's starting model, loaded once and only when asked for (retention, WiSE-FT)."""

    def __init__(self, name: str):
        self.name, self._model = name, None

    def __call__(self) -> CLIP:
        if self._model is None:
            self._model = load(resolve_model_folder(self.name), dtype="float32")
        return self._model


def measure_retention(prepared: Prepared, model: CLIP, base: BaseModel) -> dict | None:
    """metrics.json's "retention" (None with --retention-images 0)."""
    config = prepared.config
    if config.retention_images < 1:
        return None
    return retention(model, base, config.model, config.retention_images, Path(config.runs_dir) / ".cache",
                     prepared.trained_names(), config.threads)


def wise_ft(paths: RunPaths, prepared: Prepared, final: CLIP, base: BaseModel,
            say: Callable[[str], None] = print) -> dict | None:
    """Score each mix on validation (gain and retention), keep the picked one in `final` and in
    model/; metrics.json's "wise_ft" (None when not asked or without a validation set)."""
    config = prepared.config
    if not config.wise_ft:
        return None
    val_set = prepared.eval_set()
    if not val_set.image_paths:
        say("wise-ft skipped: it picks the mix on validation and this run has no validation set (--val-fraction)")
        return None
    base_weights, tuned = flat_weights(base()), flat_weights(final)

    def measure(alpha: float) -> dict:
        set_weights(final, mixed(base_weights, tuned, alpha))
        mx.eval(final.parameters())
        scored = evaluate(final, val_set, config.label_prompt, threads=config.threads)
        kept = measure_retention(prepared, final, base)
        point = {MEAN_R1: scored.get(MEAN_R1), ci_key(MEAN_R1): scored.get(ci_key(MEAN_R1)),
                 "retention_percent": kept["kept_percent"] if kept else None}
        say(f"wise-ft a = {alpha:g}: validation mean recall@1 {point[MEAN_R1]:.3f}"
            + (f", retention {point['retention_percent']:.0f} %" if point["retention_percent"] is not None else ""))
        return point

    points = sweep(config.wise_ft, measure)
    chosen, why = pick(points, config.wise_ft_pick)
    set_weights(final, mixed(base_weights, tuned, chosen["alpha"]))
    mx.eval(final.parameters())
    save_run_model(final, paths.model)
    say(f"wise-ft: kept a = {chosen['alpha']:g} ({why}); {paths.model} holds that mix")
    return {"alphas": list(config.wise_ft), "points": points, "alpha": chosen["alpha"], "rule": config.wise_ft_pick,
            "why": why, "picked_on": "validation"}


def run_verdict(paths: RunPaths, prepared: Prepared, final: CLIP, test: dict | None, kept: dict | None):
    """metrics.json's "verdict" and the validation details the report reuses (None with a test set)."""
    if test:
        before, after = EvalDetails.load(paths.test_before), EvalDetails.load(paths.test_after)
        return verdict(before, after, "test", test["size"], kept), None
    val_set = prepared.eval_set()
    if not val_set.image_paths or not paths.eval_before.is_file():
        return verdict(None, None, "validation", 0, kept) if kept else None, None
    _, after = evaluate(final, val_set, prepared.config.label_prompt, details=True, threads=prepared.config.threads)
    return verdict(EvalDetails.load(paths.eval_before), after, "validation", len(val_set.image_paths), kept), after
