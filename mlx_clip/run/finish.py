"""After the last epoch: the best model scored on the held-out test set, and the run's metrics,
data summary, model card (beside the model in model/), plots, report and closing summary
written (rank 0 only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from ..io import write_json
from ..models.clip import CLIP, load
from ..outputs.card_info import CardInfo
from ..outputs.export import save_run_model
from ..outputs.model_card import write_model_card
from ..outputs.run_paths import RunPaths
from ..train.evaluate import evaluate
from ..train.step import check_finite_weights
from .console import peak_memory, run_warnings, summary
from ..train.metric_names import MEAN_R1, RETENTION
from .judge import BaseModel, measure_retention, run_verdict, wise_ft
from .plots import save_plots, wise_ft_plot
from .prepare import Prepared

DEFAULT_CAPTIONS = "(default: built from the record's text fields)"  # the card's line when no --caption


def finish(paths: RunPaths, prepared: Prepared, history: list[dict], best: dict, step_losses: list[float],
           say: Callable[[str], None] = print) -> None:
    """Everything a finished run writes beside model/ and checkpoints/."""
    final = load(paths.model)
    check_finite_weights(final.parameters(), str(paths.model))  # what --register and --push use
    base = BaseModel(prepared.config.model)
    mix = wise_ft(paths, prepared, final, base, say)
    test = held_out_test(prepared, final, paths)
    one_model_folder(paths, final, say)
    kept = retention_or_warning(prepared, final, base, say)
    judged, val_after = run_verdict(paths, prepared, final, test, kept)
    memory = peak_memory()
    warnings = run_warnings(history, best, test)
    best_row = next((h for h in history if h["epoch"] == best["epoch"]), {})
    write_json(paths.metrics, {
        "history": history, "best_epoch": best["epoch"], f"best_{MEAN_R1}": best_row.get(MEAN_R1),
        "best_by": MEAN_R1 if MEAN_R1 in best_row else "train_loss (no validation set)",
        "step_losses": step_losses, **memory,
        "train_records": len(prepared.train_index), "val_records": len(prepared.val_index),
        "skipped": prepared.skipped_line, "split": prepared.split_line, "test": test, "warnings": warnings,
        RETENTION: kept, "verdict": judged, "wise_ft": mix})
    write_json(paths.card_data, card_data(prepared))
    write_model_card(paths.model, CardInfo.from_run(paths.root))
    save_plots(paths, history, step_losses)
    if mix:
        wise_ft_plot(paths.wise_ft_plot, mix)
    write_run_report(paths, prepared, final, history, best, warnings, say, val_after)
    say(summary(paths.root, history, best, memory, test, judged))


def retention_or_warning(prepared: Prepared, final: CLIP, base: BaseModel, say: Callable[[str], None]) -> dict | None:
    """Retention, or a warning when it cannot be measured (the model is saved: nothing is lost)."""
    try:
        return measure_retention(prepared, final, base)
    except Exception as err:  # noqa: BLE001  (the model is already written; say why retention is missing)
        say(f"warning: retention (what the model kept of the base model's general skill) not measured: {err}")
        return None


def one_model_folder(paths: RunPaths, final: CLIP, say: Callable[[str], None]) -> None:
    """A resumed old run (MLX model/ plus an HF copy in export/) ends with the one model/ of new
    runs: its best model rewritten in HF layout there, and the copy, now stale, removed."""
    if paths.old_layout:
        save_run_model(final, paths.model)
    if paths.export.is_dir():
        shutil.rmtree(paths.export)
        say(f"removed {paths.export} (a second copy of the model): {paths.model} now holds it for every use")


def held_out_test(prepared: Prepared, final: CLIP, paths: RunPaths) -> dict | None:
    """The test set's scores before training and with the best model (chosen on validation, so
    these are the unbiased figures); per-item results go to eval_test*.npz for compare.py."""
    if not prepared.test_index:
        return None
    test_set = prepared.eval_set(prepared.test_index)
    after = evaluate(final, test_set, prepared.config.label_prompt, keep=paths.test_after)
    before = json.loads(paths.test_before_metrics.read_text(encoding="utf-8"))
    return {"set": "test", "size": len(prepared.test_index), "fingerprint": prepared.split_ids["fingerprint"],
            "source": "held-out test set: not trained on, not used to pick the best epoch",
            "before": before, "after": after}


def card_data(prepared: Prepared) -> dict:
    """What the model card says about the data (runs/NAME/data.json; CardInfo.from_run reads it)."""
    config = prepared.config
    labels = None
    if config.label_field:
        labels = {"field": config.label_field, "counts": dict(prepared.label_counts().most_common())}
    sample = config.sample.draws
    return {"source": config.manifest or config.data, "records": len(prepared.items),
            "train": len(prepared.train_index), "val": len(prepared.val_index), "test": len(prepared.test_index),
            "sample": {"method": f"stratified by {config.sample.stratify}" if config.sample.stratify
                       else "simple random",
                       "size": config.sample.sample, "margin": config.sample.margin,
                       "seed": config.sample.seed} if sample else None,
            "labels": labels, "caption_templates": config.captions or [DEFAULT_CAPTIONS]}


def write_run_report(paths: RunPaths, prepared: Prepared, final: CLIP, history: list[dict], best: dict,
                     warnings: list[str], say: Callable[[str], None] = print, after=None) -> Path | None:
    """runs/NAME/report.html (see mlx_clip.outputs.report); a failure here warns and never loses the run."""
    try:
        from ..outputs.report import write_report

        return write_report(paths, prepared, final, history, best, warnings, after=after)
    except Exception as err:  # noqa: BLE001  (the model and metrics are already written)
        import traceback

        traceback.print_exc()
        say(f"warning: could not write {paths.report}: {err}")
        return None
