"""The end of a run's judging, measured on its best model (rank 0, after the last epoch): the
WiSE-FT mix (when asked), the held-out test set before and after, what the model kept of the base
model's general skill (retention) and the per-item details the verdict compares.

It only measures (and says what it picked); the run writes what was measured (run/finish.py),
so the training set and the run folder's files go down here once, with nothing to call back up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import mlx.core as mx

from ..data.training_set import TrainingSet
from ..models.clip import CLIP, load
from ..models.weights import resolve_model_folder
from .evaluate import EvalDetails, evaluate
from .metric_names import MEAN_R1, ci_key
from .retention import retention
from .nan_guard import check_finite_weights
from .step import set_weights
from .wise_ft import flat_weights, mixed, pick, retention_text, sweep


class RunFiles(Protocol):
    """The run folder's files that judging reads and writes (mlx_clip.outputs.run_paths.RunPaths)."""

    @property
    def eval_before(self) -> Path: ...

    @property
    def test_before(self) -> Path: ...

    @property
    def test_after(self) -> Path: ...

    @property
    def test_before_metrics(self) -> Path: ...


class BaseModel:
    """The run's starting model, loaded once and only when asked for (retention, WiSE-FT)."""

    def __init__(self, name: str):
        self.name, self._model = name, None

    def __call__(self) -> CLIP:
        if self._model is None:
            self._model = load(resolve_model_folder(self.name), dtype="float32")
        return self._model


@dataclass
class Judging:
    """What judging measured: metrics.json's "wise_ft", "test" and "retention", and the per-item
    details of both sets before training and with the final model (the verdict and report's)."""

    final: CLIP  # the best model, or the picked mix of it and the base model
    mix: dict | None = None
    test: dict | None = None
    kept: dict | None = None
    val_before: EvalDetails | None = None  # epoch 0's (eval_before.npz)
    val_after: EvalDetails | None = None
    val_size: int = 0
    test_before: EvalDetails | None = None  # eval_test_before.npz and eval_test.npz
    test_after: EvalDetails | None = None

    def compared(self) -> tuple[EvalDetails | None, EvalDetails | None, str, int]:
        """What the verdict compares: the test set before and after, else validation's (None when
        either is missing), with the set's name and size."""
        if self.test:
            return self.test_before, self.test_after, "test", self.test["size"]
        if self.val_before is not None and self.val_after is not None:
            return self.val_before, self.val_after, "validation", self.val_size
        return None, None, "validation", 0


def judge(model_folder: Path, data: TrainingSet, files: RunFiles, say: Callable[[str], None] = print) -> Judging:
    """The best model from `model_folder`, checked finite first (it is what --register and --push
    use), then the mix (kept in `Judging.final`), the test set, retention and the per-item details,
    in that order."""
    final = load(model_folder)
    check_finite_weights(final.parameters(), str(model_folder))
    base = BaseModel(data.config.model)
    judged = Judging(final, mix=wise_ft(final, base, data, say),
                     test=held_out_test(final, data, files))
    try:
        judged.kept = measure_retention(final, base, data)
    except Exception as err:  # noqa: BLE001  (the model is already written; say why retention is missing)
        say(f"warning: retention (what the model kept of the base model's general skill) not measured: {err}")
    if judged.test:
        judged.test_before, judged.test_after = EvalDetails.load(files.test_before), EvalDetails.load(files.test_after)
    if data.val_set.image_paths:
        _, judged.val_after = evaluate(final, data.val_set, data.config.label_prompt, details=True,
                                       threads=data.config.threads)
        judged.val_size = len(data.val_set.image_paths)
    if files.eval_before.is_file():
        judged.val_before = EvalDetails.load(files.eval_before)
    return judged


def measure_retention(model: CLIP, base: BaseModel, data: TrainingSet) -> dict | None:
    """metrics.json's "retention" (None with --retention-images 0)."""
    config = data.config
    if config.retention_images < 1:
        return None
    return retention(model, base, config.model, config.retention_images, Path(config.runs_dir) / ".cache",
                     [data.items[i].record for i in data.train_index], config.threads)


def held_out_test(final: CLIP, data: TrainingSet, files: RunFiles) -> dict | None:
    """The test set's scores before training and with the best model (chosen on validation, so
    these are the unbiased figures); per-item results go to eval_test*.npz for compare.py."""
    if not data.test_index:
        return None
    after = evaluate(final, data.test_set, data.config.label_prompt, keep=files.test_after)
    before = json.loads(files.test_before_metrics.read_text(encoding="utf-8"))
    return {"set": "test", "size": len(data.test_index), "fingerprint": data.split_ids["fingerprint"],
            "source": "held-out test set: not trained on, not used to pick the best epoch",
            "before": before, "after": after}


def wise_ft(final: CLIP, base: BaseModel, data: TrainingSet, say: Callable[[str], None] = print) -> dict | None:
    """Score each mix on validation (gain and retention) and keep the picked one in `final` (the
    run saves it); metrics.json's "wise_ft" (None when not asked or without a validation set)."""
    config, val_set = data.config, data.val_set
    if not config.wise_ft:
        return None
    if not val_set.image_paths:
        say("wise-ft skipped: it picks the mix on validation and this run has no validation set (--val-fraction)")
        return None
    base_weights, tuned = flat_weights(base()), flat_weights(final)

    def measure(alpha: float) -> dict:
        set_weights(final, mixed(base_weights, tuned, alpha))
        mx.eval(final.parameters())
        scored = evaluate(final, val_set, config.label_prompt, threads=config.threads)
        kept = measure_retention(final, base, data)
        point = {MEAN_R1: scored.get(MEAN_R1), ci_key(MEAN_R1): scored.get(ci_key(MEAN_R1)),
                 "retention_percent": kept["kept_percent"] if kept else None,
                 "retention_at_chance": bool(kept and kept.get("at_chance"))}  # then the share says nothing
        say(f"wise-ft a = {alpha:g}: validation mean recall@1 {point[MEAN_R1]:.3f}, "
            + retention_text(point))
        return point

    points = sweep(config.wise_ft, measure)
    chosen, why = pick(points, config.wise_ft_pick)
    set_weights(final, mixed(base_weights, tuned, chosen["alpha"]))
    mx.eval(final.parameters())
    return {"alphas": list(config.wise_ft), "points": points, "alpha": chosen["alpha"], "rule": config.wise_ft_pick,
            "why": why, "picked_on": "validation"}
