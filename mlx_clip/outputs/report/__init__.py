"""runs/NAME/report.html: one self-contained page showing what a run did and whether it helped.

Sections: the verdict from the held-out test set (metrics.json's "verdict", regressions in red),
the test table, what the model kept of the base model (retention), the WiSE-FT mix; then the
validation figures, labelled as what picked the epoch; the config; the data (records, skipped images, caption lengths and truncation,
labels); loss and recall plots; before/after scores with 95 % bootstrap intervals and a
paired interval for the change; text->image retrieval for a few validation captions before
and after fine-tuning (thumbnails, correct image marked); zero-shot accuracy per label; and
the worst mistakes after training. "Before" comes from the epoch-0 evaluation's saved
per-item results (eval_before.npz), "after" from evaluating the final model (mlx_clip.train.judging).
"""

from __future__ import annotations

import json
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ...flags import rows as config_rows
from ...settings import FinetuneConfig
from ...data.captions import CaptionBuilder
from ...data.dataset import Item
from ...data.training_set import MISSING_LABEL
from ...models.clip import CLIP
from ...io import write_text
from ...wording import counted
from ...train.bootstrap import TOO_FEW, shown_interval, signed_text, too_few_text, words_for
from ...train import scores
from ...train.evaluate import EvalDetails, EvalSet
from ...train.judging import Judging
from ...train.metric_names import MEAN_R1, RANK_KEYS, SCORE_KEYS, ZERO_SHOT, ci_key
from ..run_paths import RunPaths
from .gallery import Thumbnails, retrieval_section, worst_section, zero_shot_section
from .html import Raw, esc, fmt, img, page, png_file_uri, table, with_ci, words_class
from .judging import retention_section, verdict_section, wise_ft_section

class RunData(Protocol):
    """What the report reads of a prepared run (mlx_clip.run.prepare.Prepared): described here so
    that outputs/ never imports run/, which imports it."""

    config: FinetuneConfig
    items: list[Item]
    captions: CaptionBuilder
    train_index: list[int]
    val_index: list[int]
    test_index: list[int]
    skipped_line: str | None
    model: CLIP

    val_set: EvalSet

    def label_counts(self, index: list[int] | None = None) -> Counter: ...


def write_report(paths: RunPaths, prepared: RunData, history: list[dict], best: dict, warnings: list[str],
                 judged: Judging) -> Path:
    """report.html from what the run measured: `judged` holds the per-item details before and after
    (mlx_clip.train.judging); `warnings` are the run's (mlx_clip.run.console.run_warnings, as
    metrics.json holds them)."""
    config = prepared.config
    eval_set = prepared.val_set
    metrics = json.loads(paths.metrics.read_text(encoding="utf-8")) if paths.metrics.is_file() else {}
    before, after = judged.val_before, judged.val_after
    test = metrics.get("test")
    test_details = (judged.test_before, judged.test_after) if test else None
    thumbs = Thumbnails(eval_set.image_paths)
    labels = eval_set.labels
    title = f"Fine-tuning run {paths.root.name}"
    sections = [
        f"<h1>{esc(title)}</h1><p class=muted>{esc(config.model)} fine-tuned on "
        f"{len(prepared.train_index)} records, validated on {len(prepared.val_index)}. "
        "Intervals are 95 % bootstrap percentile intervals (1000 resamples, seeded); a change resamples the "
        "same items before and after (paired).</p>",
        verdict_section(metrics, warnings),
        test_section(test, test_details),
        retention_section(metrics),
        wise_ft_section(metrics, paths),
        summary_section(history, best, before, after, bool(test)),
        scores_section(history, best, before, after),
        plots_section(paths),
        data_section(prepared),
        retrieval_section(before, after, thumbs, eval_set.captions),
        zero_shot_section(before, after, labels),
        worst_section(before, after, thumbs, eval_set.captions),
        config_section(prepared),
    ]
    path = paths.report
    write_text(path, page(title, "\n".join(s for s in sections if s)))
    return path


def write_run_report(paths: RunPaths, prepared: RunData, history: list[dict], best: dict, warnings: list[str],
                     judged: Judging, say: Callable[[str], None] = print) -> Path | None:
    """write_report at the end of a run: a failure here warns and never loses the run (the model
    and metrics are already written)."""
    try:
        return write_report(paths, prepared, history, best, warnings, judged)
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        say(f"warning: could not write {paths.report}: {err}")
        return None


def _best_row(history: list[dict], best: dict) -> dict | None:
    row = next((h for h in history if h["epoch"] == best.get("epoch")), None)
    return row or (history[-1] if history else None)


# --- sections ------------------------------------------------------------------------------------------

def summary_section(history, best, before, after, has_test: bool) -> str:
    """Validation: what picked the epoch (so its after-figures are optimistic), below the verdict;
    on a handful of images the points alone (bootstrap.shown_interval), as everywhere else."""
    first = history[0] if history and history[0]["epoch"] == 0 else None
    last = _best_row(history, best)
    if not first or not last or MEAN_R1 not in first:
        return ""

    def before_after(key: str) -> tuple[str, str]:
        """The score before and after, each with its interval unless it rests on a handful of items."""
        change = paired_change(before, after, key)
        items = change[2] if change else first.get("val_size")
        was, now = (with_ci(row[key], shown_interval(row.get(ci_key(key)), items)) for row in (first, last))
        return was, now

    was, now = before_after(MEAN_R1)
    lines = [f"validation mean recall@1: {was} before → {now} after (epoch {last['epoch']})"]
    change = paired_change(before, after, MEAN_R1)
    if change:
        value, (low, high), paired = change
        words = words_for((low, high), paired)
        lines.append("change " + (too_few_text(value, paired) if words == TOO_FEW else
                                  f"{signed_text(value, (low, high))}: {words}") + " on this validation set")
    if ZERO_SHOT in first and ZERO_SHOT in last:
        was, now = before_after(ZERO_SHOT)
        lines.append(f"zero-shot accuracy: {was} → {now}")
    lines.append(f"validation: {first.get('val_size', '?')} images, {first.get('val_captions', '?')} distinct captions")
    source = ("the verdict above comes from the held-out test set" if has_test else
              "this run has no test set (--test-fraction), so the verdict above comes from these images too")
    return ("<h2>Validation: what picked the epoch</h2><p class=muted>The best epoch was chosen on these images, so "
            f"its figures flatter the model; {source}.</p><ul>"
            + "".join(f"<li>{esc(x, limit=None)}</li>" for x in lines) + "</ul>")


def data_section(prepared: RunData) -> str:
    config, model = prepared.config, prepared.model
    tokenizer = model.tokenizer
    report = prepared.captions.report(tokenizer.count_tokens, tokenizer.context_length)
    texts = list(dict.fromkeys(c for options in prepared.captions.options for c in options))
    tokens = np.array(tokenizer.count_tokens(texts) if texts else [0])
    words = np.array([len(t.split()) for t in texts] or [0])
    rows = [("records with images", len(prepared.items)),
            ("skipped", prepared.skipped_line or "none"),
            ("train / validation / test",
             f"{len(prepared.train_index)} / {len(prepared.val_index)} / {len(prepared.test_index)}"
             + (f" (stratified by {config.sample.stratify})" if config.sample.stratify else "")),
            ("distinct captions", report.captions),
            ("caption tokens min / median / mean / max",
             f"{tokens.min()} / {np.median(tokens):.0f} / {tokens.mean():.1f} / {tokens.max()}"),
            ("caption words min / median / max", f"{words.min()} / {np.median(words):.0f} / {words.max()}"),
            (f"captions truncated (> {tokenizer.context_length} tokens)", report.truncated),
            ("records without caption text", report.empty_records),
            ("caption templates", " | ".join(config.captions) or "(default: the record's text fields)")]
    out = "<h2>Data</h2>" + table(["", ""], rows)
    examples = [prepared.captions.first(i) for i in prepared.train_index[:3]]
    out += "<p>Example captions: " + "; ".join(f"<code>{esc(c)}</code>" for c in examples) + "</p>"
    if config.label_field:
        counts, val_counts = prepared.label_counts(), prepared.label_counts(prepared.val_index)
        top = counts.most_common(40)
        most = top[0][1] if top else 1
        rows = [(label, n, val_counts.get(label, 0),
                 Raw(f'<span class="bar" style="width:{max(1, round(160 * n / most))}px"></span>'))
                for label, n in top]
        out += (labels_heading(config.label_field, counts)
                + table(["label", "records", "validation", ""], rows, numeric=(1, 2)))
    return out


def labels_heading(label_field: str, counts: Counter) -> str:
    """"Labels (period): 9 values (38 records without one)": records without a value are no label."""
    values, without = len(counts) - (MISSING_LABEL in counts), counts.get(MISSING_LABEL, 0)
    return (f"<h3>Labels ({esc(label_field)}): {counted(values, 'value')}"
            + (f" ({counted(without, 'record')} without one)" if without else "")
            + (", the 40 most common shown" if len(counts) > 40 else "") + "</h3>")


def plots_section(paths: RunPaths) -> str:
    images = []
    for path, alt in ((paths.loss_plot, "training loss per step and epoch"),
                      (paths.recall_plot, "validation recall and zero-shot accuracy per epoch")):
        uri = png_file_uri(path)
        if uri:
            images.append(img(uri, alt))
    return "<h2>Training curves</h2><div class=plots>" + "".join(images) + "</div>" if images else ""


def paired_change(before: EvalDetails | None, after: EvalDetails | None, key: str):
    """(after - before, its paired 95 % interval, the items it rests on) or None
    (mlx_clip.train.scores.change)."""
    if before is None or after is None:
        return None
    return scores.change(before, after, key)


def change_cell(change) -> Raw | str:
    """A paired change and its interval, green when the interval is above 0, red when below; on too
    few items (bootstrap.words_for's TOO_FEW) neither, and it says so, as the verdict does."""
    if not change:
        return "–"
    value, (low, high), items = change
    text, words = signed_text(value, (low, high)), words_for((low, high), items)
    if words == TOO_FEW:
        return Raw(f'<span class="muted">{too_few_text(value, items)}</span>')
    return Raw(f'<span class="{words_class(words)}">{text}</span>')


def test_section(test: dict | None, details: tuple[EvalDetails, EvalDetails] | None) -> str:
    """The held-out test set's before and after (from metrics.json, and eval_test*.npz's per-item
    `details`): unlike validation, it picked nothing, so these are the figures to quote."""
    if not test or details is None:
        return ""
    before, after = details
    rows = []
    for key in SCORE_KEYS:
        if key not in test["before"] and key not in test["after"]:
            continue
        change = paired_change(before, after, key)
        rows.append((key, *score_cells(test["before"], test["after"], key, change), change_cell(change)))
    rows += _rank_rows(test["before"], test["after"])
    return (f"<h2>Held-out test set (n = {esc(test['size'])}): before and after</h2>"
            f"<p class=muted>{esc(test['source'])}; after = the best model. Test set fingerprint "
            f"<code>{esc(test['fingerprint'][:12])}</code> (compare.py compares runs that share it).</p>"
            + table(["metric", "before [95 % CI]", "after [95 % CI]", "change [paired 95 % CI]"], rows,
                    numeric=(1, 2, 3)))


def score_cells(before: dict, after: dict, key: str, change) -> tuple[str, str]:
    """A score before and after with their intervals; none on a handful of paired items (two
    query images bootstrap to [1.000, 1.000], which says nothing)."""
    items = change[2] if change is not None else None
    return tuple(with_ci(row.get(key), shown_interval(row.get(ci_key(key)), items)) for row in (before, after))


def _rank_rows(before: dict, after: dict) -> list[tuple]:
    return [(key + " (lower is better)", fmt(before.get(key), 1), fmt(after.get(key), 1), "")
            for key in RANK_KEYS if key in before or key in after]


def scores_section(history, best, before, after) -> str:
    first = history[0] if history and history[0]["epoch"] == 0 else {}
    last = _best_row(history, best) or {}
    rows = []
    for key in SCORE_KEYS:
        if key not in first and key not in last:
            continue
        change = paired_change(before, after, key)
        rows.append((key, *score_cells(first, last, key, change), change_cell(change)))
    rows += _rank_rows(first, last)
    n = first.get("val_size", last.get("val_size"))
    return (f"<h2>Before and after on validation (n = {esc(n)}; it picked the epoch)</h2>"
            f"<p class=muted>After = epoch {esc(last.get('epoch'))}, the best by mean recall@1. "
            "i2t: image → its caption among the distinct validation captions; t2i: caption → its image.</p>"
            + table(["metric", "before [95 % CI]", "after [95 % CI]", "change [paired 95 % CI]"], rows,
                    numeric=(1, 2, 3)))


def config_section(prepared: RunData) -> str:
    rows = [(k, json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v)
            for k, v in config_rows(prepared.config)]
    return "<h2>Configuration</h2>" + table(["setting", "value"], rows)
