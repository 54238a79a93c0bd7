"""How many images are enough? A measured learning curve.

One seeded permutation of the training split; each size trains a fresh copy of the starting
model on that permutation's first N records (so every smaller subset lies inside the larger
ones) with the run's settings, then evaluates on the one fixed validation set. Every point
carries 95 % bootstrap intervals and two paired changes of mean recall@1 (the same validation
items before and after, mlx_clip.train.scores): against the starting model and against the
previous size. The words follow the intervals: the gain "becomes distinguishable" at the
smallest size whose paired interval against the start lies above 0; while the last step's
interval includes 0 the curve "cannot tell yet" whether more images help; it "flattens" at N
only when the paired interval of (largest - N) shows the gain per 100 images is below
`flat_threshold`. The survey formula's n = N / (1 + N e^2) is marked for comparison.

Writes runs/NAME/curve.json, curve.png and curve.html (self-contained).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..settings import FinetuneConfig
from ..data.sampling import sample_size
from ..errors import InputError
from ..io import write_json, write_text
from ..models.clip import CLIP
from ..outputs.run_paths import RunPaths
from ..train import scores
from ..train.bootstrap import TOO_FEW, change_text, score_text, shown_interval, words_for
from ..train.evaluate import evaluate
from ..train.metric_names import MEAN_R1, RETRIEVAL_RECALLS, ZERO_SHOT, ci_key
from ..train.optim import make_optimizer
from ..train.epoch import Float32View, train_epoch
from ..train.step import Trainer, set_weights
from .folder import claim_run_folder, lock_run_folder, run_name
from ..outputs.plots import plot_curve
from ..wording import counted
from .prepare import Prepared, prepare

CURVE_KEYS = (MEAN_R1,) + RETRIEVAL_RECALLS + (ZERO_SHOT,)
PERMUTATION_SALT = 0x5EED  # the subsets' permutation differs from the split's for the same seed


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise InputError(f"--sizes {text!r}: give comma-separated numbers of images, e.g. 250,500,1000") from None
    if not sizes or sizes[0] < 1:
        raise InputError(f"--sizes {text!r}: sizes must be positive")
    return sizes


def training_order(train_index: Sequence[int], seed: int) -> list[int]:
    """The training split in one seeded random order; subsets are its prefixes."""
    perm = np.random.default_rng([seed, PERMUTATION_SALT]).permutation(len(train_index))
    return [train_index[j] for j in perm]


def nested_subsets(train_index: Sequence[int], sizes: Sequence[int], seed: int = 0) -> dict[int, list[int]]:
    """{size: record indices}: prefixes of one permutation, so each subset contains the smaller ones."""
    too_big = [n for n in sizes if n > len(train_index)]
    if too_big:
        raise InputError(f"learning-curve size {too_big[0]} is larger than the training split "
                         f"({len(train_index)} records); use sizes up to {len(train_index)}")
    order = training_order(train_index, seed)
    return {n: order[:n] for n in sorted(sizes)}


def gains_per_100(sizes: Sequence[int], values: Sequence[float]) -> list[float]:
    """Score gained per 100 extra images between consecutive sizes."""
    return [(values[i + 1] - values[i]) / (sizes[i + 1] - sizes[i]) * 100 for i in range(len(sizes) - 1)]


def flattening_size(sizes: Sequence[int], values: Sequence[float], threshold: float) -> int | None:
    """The smallest size after which every further 100 images gain less than `threshold`; None
    while the last measured step still gains that much (get more data, or measure larger sizes)."""
    gains = gains_per_100(sizes, values)
    if not gains or gains[-1] >= threshold:
        return None
    i = len(gains)
    while i > 0 and gains[i - 1] < threshold:
        i -= 1
    return int(sizes[i])


def survey_size(config: FinetuneConfig, n_records: int, survey_margin: str | float | None = None,
                population: int | None = None) -> dict | None:
    """The sample size the survey formula gives (or the --sample asked), for the plot."""
    margin = survey_margin or config.sample.margin
    if margin:
        if population is None and not survey_margin and config.data and not config.manifest:
            from ..data.records import read_records

            try:
                population = len(read_records(config.data))
            except Exception:  # noqa: BLE001
                population = None
        population = population or n_records
        n = sample_size(population, str(margin))
        return {"size": n, "how": f"n = N / (1 + N e²) = {n} for N = {population}, e = {margin}",
                "population": population, "margin": float(margin)}
    if config.sample.sample:
        n = int(config.sample.sample)
        return {"size": n, "how": f"--sample {n}", "population": None, "margin": None}
    return None


def _train_subset(prepared: Prepared, model: CLIP, start: dict, subset: list[int], progress: bool) -> tuple[CLIP, dict]:
    config = replace(prepared.config, batch_size=min(prepared.config.batch_size, len(subset)))
    sub = replace(prepared, config=config, train_index=subset)
    set_weights(model, start)
    mx.eval(model.parameters())
    sub.ready_to_train(model)
    trainer = Trainer(model, make_optimizer(config.optim, config.total_steps(sub.steps_per_epoch)), config.precision,
                      model.tokenizer.eos_token_id)
    stream = sub.train_stream(sub.model)
    losses: list[float] = []
    for epoch in range(1, config.epochs + 1):
        mx.random.seed(config.sample.seed * 100_003 + epoch)
        step_losses, sizes = train_epoch(trainer, stream, epoch, config.epochs, progress)
        losses.append(float(np.average(step_losses, weights=sizes)))
    return Float32View(model, trainer).refresh(), {"train_loss": losses[-1] if losses else None,
                                                   "batch_size": config.batch_size,
                                                   "steps": sub.steps_per_epoch * config.epochs}


def learning_curve(config: FinetuneConfig, sizes: Sequence[int], flat_threshold: float = 0.01,
                   survey_margin: str | float | None = None, population: int | None = None,
                   progress: bool = True, say: Callable[[str], None] = print, model: CLIP | None = None) -> Path:
    """Train on nested subsets of the training split, evaluate each on one validation set; write
    runs/NAME/curve.json, curve.png and curve.html. Returns the run folder (locked while it is written)."""
    name, created = claim_run_folder(config.runs_dir, run_name(config), unique=config.name is None)
    config = replace(config, name=name)
    with lock_run_folder(RunPaths.of(config.runs_dir, config.name).root, created):
        return _curve_in_folder(config, sizes, flat_threshold, survey_margin, population, progress, say, model)


def _curve_in_folder(config: FinetuneConfig, sizes: Sequence[int], flat_threshold: float,
                     survey_margin: str | float | None, population: int | None, progress: bool,
                     say: Callable[[str], None], model: CLIP | None) -> Path:
    prepared = prepare(config, say, model)
    config, model = prepared.config, prepared.model  # the config as resolved by the data step
    subsets = nested_subsets(prepared.train_index, sizes, config.sample.seed)
    eval_set = prepared.val_set
    if not eval_set.image_paths:
        raise InputError("the learning curve needs a validation set; use --val-fraction > 0")
    paths = RunPaths.of(config.runs_dir, config.name)
    paths.root.mkdir(parents=True, exist_ok=True)
    start = dict(tree_flatten(model.parameters()))  # MLX arrays are immutable: this keeps the starting weights
    val_ids = [prepared.items[i].record_id for i in prepared.val_index]
    say(f"learning curve: sizes {', '.join(map(str, subsets))} of {len(prepared.train_index)} training records, "
        f"{counted(config.epochs, 'epoch')} each; one validation set of {counted(len(val_ids), 'record')}")
    started = time.perf_counter()
    metrics, before = evaluate(model, eval_set, config.label_prompt, threads=config.threads, details=True)
    points = [{"size": 0, **metrics}]
    say(_point_line(points[0], time.perf_counter() - started))
    previous, by_size = before, {}
    for n, subset in subsets.items():
        started = time.perf_counter()
        trained, info = _train_subset(prepared, model, start, subset, progress)
        metrics, details = evaluate(trained, eval_set, config.label_prompt, threads=config.threads, details=True)
        points.append({"size": n, **info, **metrics, "vs_start": paired(before, details),
                       "vs_previous": paired(previous, details), "seconds": time.perf_counter() - started})
        previous = by_size[n] = details
        say(_point_line(points[-1], points[-1]["seconds"]))
        write_json(paths.curve_json, _curve_json(config, prepared, subsets, points, val_ids,
                                                 flat_threshold, None, by_size))  # partial results survive a stop
    survey = survey_size(config, len(prepared.items), survey_margin, population)
    result = _curve_json(config, prepared, subsets, points, val_ids, flat_threshold, survey, by_size)
    write_json(paths.curve_json, result)
    plot_curve(paths.curve_plot, result)
    write_curve_html(paths.curve_html, result, paths.curve_plot)
    say(curve_summary(result))
    say(f"wrote {paths.root}: {paths.curve_json.name} {paths.curve_plot.name} {paths.curve_html.name}")
    return paths.root


def paired(before, after) -> dict | None:
    """The paired change of mean recall@1 between two evaluations of the validation set, in words."""
    found = scores.change(before, after, MEAN_R1)
    return None if found is None else {"change": found[0], "ci95": found[1], "items": found[2],
                                       "words": words_for(found[1], found[2])}


def distinguishable_at(points: Sequence[dict]) -> int | None:
    """The smallest size whose gain over the starting model has a paired interval above 0."""
    return next((p["size"] for p in points if p["size"] > 0 and (p.get("vs_start") or {}).get("words") == "better"),
                None)


def _score_text(point: dict, key: str) -> str:
    """A score with its interval; the point alone on a validation set of fewer than MIN_ITEMS images."""
    return score_text(point[key], point.get(ci_key(key)) or [math.nan, math.nan], point.get("val_size"))


def _point_line(point: dict, seconds: float) -> str:
    label = "before" if point["size"] == 0 else f"{point['size']} images"
    line = f"{label:>12}: mean R@1 {_score_text(point, MEAN_R1)}"
    if ZERO_SHOT in point:
        line += f", zero-shot {_score_text(point, ZERO_SHOT)}"
    if point.get("vs_start"):
        line += f", vs start {_change_text(point['vs_start'])}"
    return line + f" ({seconds:.1f}s)"


def _change_text(change: dict) -> str:
    return change_text(change["change"], change["ci95"], change["items"])


def _curve_json(config, prepared, subsets, points, val_ids, threshold, survey, details: dict) -> dict:
    trained = [p for p in points if p["size"] > 0]
    sizes = [p["size"] for p in trained]
    values = [p[MEAN_R1] for p in trained]
    flat = flattening_size(sizes, values, threshold) if len(trained) > 1 else None
    flat_shown = flat is not None and flat_is_measured(details, flat, threshold)
    order = training_order(prepared.train_index, config.sample.seed)
    return {
        "sizes": sizes, "points": points, "val_size": len(val_ids), "val_ids": val_ids,
        "train_records": len(prepared.train_index),
        "subset_order": [prepared.items[i].record_id for i in order[:max(subsets)]],  # size N = first N ids
        "flat_threshold": threshold, "flat_metric": MEAN_R1, "flat_at": flat if flat_shown else None,
        "flat_at_point_estimate": flat, "distinguishable_at": distinguishable_at(points),
        "gains_per_100": gains_per_100(sizes, values), "survey": survey,
        "config": config.to_dict(),
    }


def flat_is_measured(details: dict, flat: int, threshold: float) -> bool:
    """True when the paired interval of (largest - `flat`) tells the gain per 100 images is below
    `threshold`; point estimates alone never make a curve "flatten". `details`: size -> EvalDetails."""
    largest = max(details)
    if flat not in details or flat == largest:
        return False
    found = scores.change(details[flat], details[largest], MEAN_R1)
    return found is not None and found[1][1] / (largest - flat) * 100 < threshold


def curve_summary(result: dict) -> str:
    """Plain words that never contradict the intervals (see the module docstring)."""
    threshold = result["flat_threshold"]
    trained = [p for p in result["points"] if p["size"] > 0]
    lines = []
    if trained and trained[-1].get("vs_start"):
        at = result.get("distinguishable_at")
        if at is not None:
            change = next(p for p in trained if p["size"] == at)["vs_start"]
            lines.append(f"the gain over the starting model becomes distinguishable at {at} images "
                         f"(mean recall@1 {_change_text(change)})")
        else:
            lines.append(f"cannot tell yet: at no measured size is the gain over the starting model distinguishable "
                         f"(at {trained[-1]['size']} images: {_change_text(trained[-1]['vs_start'])})")
    if len(trained) > 1 and trained[-1].get("vs_previous"):
        step, last = trained[-1]["vs_previous"], trained[-1]["size"]
        text = f"from {trained[-2]['size']} to {last} images: {_change_text(step)}"
        if step["words"] in ("not distinguishable", TOO_FEW):
            lines.append(f"cannot tell yet whether more images help ({text}); measure larger sizes or a larger "
                         "validation set to tell")
        elif step["words"] == "better":
            lines.append(f"more images still help ({text}): more are likely to help further")
        else:
            lines.append(f"more images made it worse ({text})")
    if result["flat_at"] is not None:
        lines.append(f"the curve flattens at {result['flat_at']} images: the paired interval shows less than "
                     f"{threshold:g} mean recall@1 gained per 100 further images")
    if result.get("survey"):
        lines.append(f"survey formula: {result['survey']['how']}")
    return "\n".join(lines)


def _change_cell(change: dict | None):
    from ..outputs.report.html import Raw, esc, words_class

    if not change:
        return ""
    cls = words_class(change["words"])
    return Raw(f'<span class="{cls}">{esc(_change_text(change))}</span>')


def write_curve_html(path: Path, result: dict, png: Path) -> Path:
    from ..outputs.report.html import esc, img, page, png_file_uri, table, with_ci

    keys = [k for k in CURVE_KEYS if any(k in p for p in result["points"])]
    rows = []
    gains = [None] + result["gains_per_100"]
    for i, p in enumerate(result["points"]):
        gain = gains[i - 1] if i > 0 else None
        rows.append([("before" if p["size"] == 0 else p["size"])]
                    + [with_ci(p.get(k), shown_interval(p.get(ci_key(k)), result["val_size"])) for k in keys]
                    + [_change_cell(p.get("vs_start")), _change_cell(p.get("vs_previous"))]
                    + ["" if gain is None else f"{gain:+.4f}"])
    summary = "".join(f"<li>{esc(line, limit=None)}</li>" for line in curve_summary(result).splitlines())
    body = (f"<h1>Learning curve: {esc(result['config'].get('name'))}</h1>"
            f"<ul>{summary}</ul>"
            f"<p class=muted>Each size trains the starting model afresh on the first N records of one seeded "
            f"permutation of the {result['train_records']} training records (nested subsets), "
            f"{result['config'].get('epochs')} epochs, and is evaluated on the same {result['val_size']} "
            "validation records. Intervals: 95 % bootstrap percentile (1000 resamples).</p>"
            f"<div class=plots>{img(png_file_uri(png), 'learning curve')}</div>"
            + table(["images"] + keys + ["mean R@1 vs start [paired 95 % CI]",
                                         "mean R@1 vs previous size [paired 95 % CI]",
                                         "mean R@1 gain per 100 images (point estimate)"], rows,
                    numeric=tuple(range(len(keys) + 4))))
    body += f"<p class=small>flat threshold: {result['flat_threshold']:g} mean R@1 per 100 images</p>"
    write_text(path, page("Learning curve", body))
    return path
