"""After the last epoch: the best model judged (train/judging.py: the WiSE-FT mix, the held-out
test set, retention), then what that measured written down (rank 0 only): metrics, data
summary, model card (beside the model in model/), plots, report and the closing summary."""

from __future__ import annotations

from typing import Callable

from ..io import write_json
from ..outputs.card_info import CardInfo
from ..outputs.export import one_model_folder
from ..outputs.model_card import write_model_card
from ..outputs.plots import save_plots, wise_ft_plot
from ..outputs.report import write_run_report
from ..outputs.run_paths import RunPaths
from ..train.judging import judge
from ..train.metric_names import MEAN_R1, RETENTION
from ..train.verdict import verdict
from .console import peak_memory, run_warnings, summary
from .prepare import Prepared


def finish(paths: RunPaths, prepared: Prepared, history: list[dict], best: dict, step_losses: list[float],
           say: Callable[[str], None] = print) -> None:
    """Everything a finished run writes beside model/ and checkpoints/: the best model judged
    (train/judging.py measures), then what was measured written down; the closing summary last."""
    judged = judge(paths.model, prepared, paths, say)
    data_summary = prepared.data_summary()
    before, after, compared_on, size = judged.compared()
    found = None
    if before is not None or judged.kept:  # metrics.json's "verdict"
        found = verdict(before, after, compared_on, size, judged.kept)
    memory, warnings = peak_memory(), run_warnings(history, best, judged.test)
    closing = summary(paths.root, history, best, memory, judged.test, found, wise_ft_plot=bool(judged.mix))
    save_plots(paths, history, step_losses)
    if judged.mix:
        wise_ft_plot(paths.wise_ft_plot, judged.mix)
    for line in one_model_folder(judged.final, paths, judged.mix):
        say(line)
    best_row = next((h for h in history if h["epoch"] == best["epoch"]), {})
    write_json(paths.metrics, {
        "history": history, "best_epoch": best["epoch"], f"best_{MEAN_R1}": best_row.get(MEAN_R1),
        "best_by": MEAN_R1 if MEAN_R1 in best_row else "train_loss (no validation set)",
        "step_losses": step_losses, **memory,
        "train_records": len(prepared.train_index), "val_records": len(prepared.val_index),
        "skipped": prepared.skipped_line, "split": prepared.split_line, "test": judged.test, "warnings": warnings,
        RETENTION: judged.kept, "verdict": found, "wise_ft": judged.mix})
    write_json(paths.card_data, data_summary)
    write_model_card(paths.model, CardInfo.from_run(paths.root))
    write_run_report(paths, prepared, history, best, warnings, judged, say)
    say(closing)  # said once all is written
