"""What a run says on the console: the epoch table, the plan (describe), the warnings, the
closing summary, and human-readable sizes and durations."""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..outputs.run_paths import RunPaths
from ..train.bootstrap import MIN_ITEMS, TOO_FEW, score_text
from ..train.loss import chance_loss
from ..train.metric_names import (I2I_QUERIES, I2I_R1, MEAN_R1, RETRIEVAL_RECALLS, ZERO_SHOT, ci_key, mean_rank_key,
                                  short_name)
from ..train.step import count_parameters
from ..wording import counted, millions
from .prepare import Prepared


RETRIEVAL_COLUMNS = [(key, short_name(key)) for key in RETRIEVAL_RECALLS] + [
    (mean_rank_key("i2t"), "i2t rank"), (mean_rank_key("t2i"), "t2i rank")]


def table_columns(prepared: Prepared) -> list[tuple[str, str]]:
    """The epoch table's columns for this run: zero-shot accuracy only with a --label-field, and
    image-to-image recall only where an image can have a partner (no column of dashes)."""
    return (RETRIEVAL_COLUMNS + ([(ZERO_SHOT, short_name(ZERO_SHOT))] if prepared.config.label_field else [])
            + ([(I2I_R1, short_name(I2I_R1))] if prepared.val_set.groups is not None else []))


def table_header(columns: list[tuple[str, str]]) -> str:
    return f"{'epoch':>5} {'loss':>8} " + " ".join(f"{title:>8}" for _, title in columns)


def epoch_line(prepared: Prepared, row: dict) -> str:
    """An epoch's row of the table, in this run's columns."""
    return table_row(row, table_columns(prepared))


def table_row(row: dict, columns: list[tuple[str, str]]) -> str:
    loss = f"{row['train_loss']:8.4f}" if row.get("train_loss") is not None else f"{'-':>8}"
    cells = []
    for key, _ in columns:
        value = row.get(key)
        cells.append(f"{'-':>8}" if value is None else (f"{value:8.1f}" if "rank" in key else f"{value:8.3f}"))
    label = "before" if row["epoch"] == 0 else str(row["epoch"])
    return f"{label:>5} {loss} " + " ".join(cells)


def peak_memory() -> dict[str, int]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss = rss if sys.platform == "darwin" else rss * 1024
    out = {"max_rss_bytes": int(rss)}
    if hasattr(mx, "get_peak_memory"):
        out["mlx_peak_bytes"] = int(mx.get_peak_memory())
    return out


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def duration(seconds: float) -> str:
    """0.044s, 8.1s, 2m05s, 3h20m: never 0.0s for a time too short for one decimal."""
    if seconds < 1:
        return f"{seconds:.2g}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class RunSize:
    """The run's own size when `prepared` holds only the images a dry run measured on: its sample
    (of the catalogue) and the split and steps the run would have (before any image fails)."""

    sample: int
    catalogue: int
    train: int
    val: int
    test: int


def describe(prepared: Prepared, trainable: int, run_size: RunSize | None = None) -> str:
    """The plan: records, split, captions, model (with `trainable` of its parameters trained) and
    schedule; a dry run that measured a subset passes the run's own `run_size`."""
    config, model = prepared.config, prepared.model
    report = prepared.captions.report(model.tokenizer.count_tokens, model.tokenizer.context_length)
    total = count_parameters(model.parameters())
    if run_size is None:
        records = f"records: {len(prepared.items):,} with images ({prepared.manifest})"
        train, val, test = len(prepared.train_index), len(prepared.val_index), len(prepared.test_index)
        spe, how = prepared.steps_per_epoch, f"; {prepared.split_line}"
    else:
        drawn = (f"uses all {run_size.catalogue:,} records" if run_size.sample == run_size.catalogue else
                 f"draws a sample of {run_size.sample:,} of {run_size.catalogue:,}")
        records = (f"records: the run {drawn} and fetches them; measured here on {len(prepared.items):,} of them "
                   f"({prepared.manifest})")
        train, val, test = run_size.train, run_size.val, run_size.test
        spe, how = config.steps_per_epoch(train), " (the run's, before any image fails)"
    total_steps = config.total_steps(spe)
    lines = [
        records,
        f"split: {train:,} train, {val:,} validation (picks the best epoch), "
        + (f"{test:,} test (held out for the before/after figures)" if test
           else "no test set (--test-fraction; the before/after figures come from validation)")
        + (f" (stratified by {config.sample.stratify})" if config.sample.stratify else "") + how,
        f"captions{' of the measured images' if run_size else ''}: {report.line(model.tokenizer.context_length)}",
        f"example caption: {prepared.captions.first(prepared.train_index[0])!r}",
        f"model: {config.model} ({millions(total)} parameters, "
        f"{'all trained' if trainable == total else millions(trainable) + ' trained'}), "
        f"{config.precision}, image {model.config.vision.image_size}px",
        f"schedule: {counted(config.epochs, 'epoch')} x {counted(spe, 'step', thousands=True)} of {config.batch_size} = "
        f"{counted(spe * config.epochs, 'step', thousands=True)}, lr {config.optim.lr:g} "
        f"(warmup {counted(config.optim.warmup_steps(total_steps), 'step', thousands=True)}, cosine), "
        f"weight decay {config.optim.weight_decay:g}",
    ]
    return "\n".join(lines)


def start_lines(prepared: Prepared, trainable: int, distributed: str | None, history: list[dict]) -> list[str]:
    """What a run says before its first epoch: the plan, the distributed line, the epoch table's
    header and the rows a resumed run already has."""
    columns = table_columns(prepared)
    table = [table_header(columns)] + [table_row(row, columns) for row in history]
    return [describe(prepared, trainable)] + ([distributed] if distributed else []) + table


STUCK_TOLERANCE = 0.02  # a post-warmup epoch loss within 2 % of chance (or above it) is "stuck"


def stuck_warning(epoch: int, losses: list[float], sizes: list[int], first_step: int, warmup_steps: int,
                  loss_kind: str = "softmax") -> str | None:
    """A warning when this epoch's steps after warmup average a loss at chance level (loss.chance_loss:
    ln(batch size) for CLIP), the loss of scores that tell no image from another: not learning."""
    after = [(loss, size) for k, (loss, size) in enumerate(zip(losses, sizes)) if first_step + k >= warmup_steps
             and size > 1]
    if not after:
        return None
    loss = float(np.mean([loss for loss, _ in after]))
    chance = float(np.mean([chance_loss(loss_kind, size) for _, size in after]))
    if loss < chance * (1 - STUCK_TOLERANCE):
        return None
    named = "ln of the batch size" if loss_kind == "softmax" else "chance for this batch size"
    where = "stays at" if loss <= chance * (1 + STUCK_TOLERANCE) else "is above"
    # the trend over the whole epoch, warmup included: a SigLIP starting at 136 fell to 28 in its first
    # epoch, with a spike after warmup that made the post-warmup halves say "not learning"
    trend = [loss for loss, size in zip(losses, sizes) if size > 1]
    half = len(trend) // 2
    falling = half >= 2 and np.mean(trend[half:]) < np.mean(trend[:half]) * (1 - STUCK_TOLERANCE)
    if falling:
        advice = "it is falling, so it may only need more epochs or a higher --lr"
    elif len(after) < 4:  # too few steps to see a trend: say so rather than "not learning"
        advice = (f"only {counted(len(after), 'step')} after warmup so far, too few to tell whether it is falling; "
                  "if later epochs stay there, try another --lr or check that the captions tell the images apart")
    else:
        advice = "the model is not learning; try another --lr or check that the captions tell the images apart"
    return f"warning: epoch {epoch}: the training loss after warmup ({loss:.3f}) {where} chance level ({named} = {chance:.3f}): {advice}"


def below_start_warning(history: list[dict], best: dict, test: dict | None = None) -> str | None:
    """Said plainly when the kept (best) epoch scores below the starting model on mean recall@1:
    on the held-out test set when there is one, else on validation."""
    if test:
        before, after, where = test["before"], test["after"], "held-out test"
    else:
        before = history[0] if history and history[0]["epoch"] == 0 else None
        after, where = next((h for h in history if h["epoch"] == best["epoch"]), None), "validation"
    if not before or not after or MEAN_R1 not in before or MEAN_R1 not in after:
        return None
    if after[MEAN_R1] >= before[MEAN_R1]:
        return None
    return (f"warning: the fine-tuned model scores below the starting model ({where} mean recall@1 "
            f"{before[MEAN_R1]:.3f} before, {after[MEAN_R1]:.3f} after at its best epoch "
            f"{best['epoch']}); the base model is the better choice for these records")


def run_warnings(history: list[dict], best: dict, test: dict | None = None) -> list[str]:
    """Every warning of a run (stuck epochs, a result below the start), for metrics, report and card.
    The console printed each stuck epoch as it happened; the run's record says them in one line:
    left behind by a later epoch (its loss fell below chance), that the model learned late; still
    stuck at the end, which epochs and the last one's own figures and advice."""
    trained = [row for row in history if row.get("epoch", 0) > 0]
    stuck = [row["epoch"] for row in trained if row.get("warning")]
    if stuck and trained[-1]["epoch"] not in stuck:
        recovered = next(row["epoch"] for row in trained if row["epoch"] > stuck[-1])
        warnings = [f"warning: {_epochs(stuck)}: the training loss after warmup stayed at or above chance level; "
                    f"it fell below from epoch {recovered}, so the model learned late (a higher --lr may get there "
                    "sooner)"]
    elif len(stuck) > 1:
        last = trained[-1]["warning"].removeprefix("warning: ")
        warnings = [f"warning: {_epochs(stuck)} stayed at or above chance level; {last}"]
    else:
        warnings = [row["warning"] for row in trained if row.get("warning")]
    below = below_start_warning(history, best, test)
    return warnings + ([below] if below else [])


def _epochs(numbers: list[int]) -> str:
    """'epoch 2', 'epochs 1-3' or 'epochs 1, 3' (the run's stuck epochs, in order)."""
    if len(numbers) == 1:
        return f"epoch {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"epochs {numbers[0]}-{numbers[-1]}"
    return "epochs " + ", ".join(map(str, numbers))


def test_line(test: dict) -> str:
    """The summary's held-out line: before -> after on the test set, with intervals."""
    def fmt(row: dict, key: str, items: int | None = None) -> str:
        return score_text(row[key], row.get(ci_key(key)), items)

    line = (f"held-out test ({test['size']} images, not used for training or picking the epoch): mean recall@1 "
            f"{fmt(test['before'], MEAN_R1)} before -> {fmt(test['after'], MEAN_R1)} after")
    if ZERO_SHOT in test["after"] and ZERO_SHOT in test["before"]:
        line += f"; zero-shot accuracy {fmt(test['before'], ZERO_SHOT)} -> {fmt(test['after'], ZERO_SHOT)}"
    if I2I_R1 in test["after"] and I2I_R1 in test["before"]:
        queries = test["after"][I2I_QUERIES]
        line += (f"; image-to-image recall@1 {fmt(test['before'], I2I_R1, queries)} -> "
                 f"{fmt(test['after'], I2I_R1, queries)} ({queries} query images with another of their group"
                 + (f": {TOO_FEW}, fewer than {MIN_ITEMS})" if queries < MIN_ITEMS else ")"))
    elif test["after"].get("i2i_note"):
        line += f"; {test['after']['i2i_note']}"
    return line


def verdict_lines(judged: dict | None) -> list[str]:
    """The verdict sentence (metrics.json's "verdict", as the report and the card show it) and one
    line per regression."""
    if not judged:
        return []
    where = "held-out test set" if judged["set"] == "test" else "validation set"
    lines = [f"verdict ({where}): {judged['line']}"]
    if judged["regressions"]:
        lines.append("warning: fine-tuning made it worse at " + ", ".join(judged["regressions"])
                     + " (the interval of the change lies below 0); see report.html")
    return lines


def summary(run_dir: Path, history: list[dict], best: dict, memory: dict, test: dict | None = None,
            judged: dict | None = None, wise_ft_plot: bool = False) -> str:
    """The closing lines: the verdict, before -> after, the warnings, peak memory and what the run
    writes (`wise_ft_plot`: with --wise-ft's trade-off plot)."""
    before = history[0] if history and history[0]["epoch"] == 0 else None
    best_row = next((h for h in history if h["epoch"] == best["epoch"]), None)
    lines = verdict_lines(judged)
    if before and best_row and MEAN_R1 in before:
        lines.append(f"validation mean recall@1: {before[MEAN_R1]:.3f} before -> {best_row[MEAN_R1]:.3f} "
                     f"after (best epoch {best['epoch']}; validation picked it, so this is optimistic)")
    if best_row and ZERO_SHOT in best_row and before and ZERO_SHOT in before:
        lines.append(f"validation zero-shot accuracy: {before[ZERO_SHOT]:.3f} before -> "
                     f"{best_row[ZERO_SHOT]:.3f} after")
    if best_row and I2I_R1 in best_row and before and I2I_R1 in before:
        lines.append(f"validation image-to-image recall@1: {before[I2I_R1]:.3f} before -> {best_row[I2I_R1]:.3f} "
                     f"after ({best_row[I2I_QUERIES]} query images)")
    if test:
        lines.append(test_line(test))
    below = below_start_warning(history, best, test)  # each epoch's own warning was said with its row
    lines += [below] if below else []
    peak = f"peak memory: {gib(memory['max_rss_bytes'])} process RSS"
    if "mlx_peak_bytes" in memory:
        peak += f", {gib(memory['mlx_peak_bytes'])} MLX arrays"
    paths = RunPaths(run_dir)
    written = [paths.config, paths.metrics, paths.report, paths.loss_plot, paths.recall_plot]
    written += [paths.wise_ft_plot] if wise_ft_plot else []
    folders = [paths.model, paths.checkpoints]
    lines += [peak, f"wrote {paths.root}: " + " ".join([p.name for p in written] + [f"{p.name}/" for p in folders])]
    return "\n".join(lines)

