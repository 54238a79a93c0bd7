"""Compare fine-tuning runs on one shared held-out test set, with paired bootstrap intervals.

Each run folder holds split.json (its test record ids and their fingerprint) and
eval_test.npz (the best model's per-item test results, in split.json's test order). Runs are
compared only when their test sets are the same records. Each run's own scores and intervals
are computed exactly as finetune computed them (mlx_clip.train.scores: same function, same seed,
so compare prints the figures of the run's metrics.json); each later run's difference from the
first resamples the same test items for both (a paired bootstrap), which is much tighter than
comparing two separate intervals. Test images pair by record id, captions by their text; when
two runs rank other captions (other templates), each image stands for its own caption.
The first run's starting model (eval_test_before.npz) is shown as a "base model" row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


from ..errors import InputError
from ..io import read_small_text, write_json, write_text
from ..outputs.run_paths import RunPaths
from ..train import scores
from ..train.bootstrap import MIN_ITEMS, TOO_FEW, change_text, score_text, words_for
from ..train.evaluate import EvalDetails
from ..train.metric_names import SCORE_KEYS, ci_key

BASE_ROW = "base model (before fine-tuning)"


@dataclass
class RunResult:
    """One run's test-set results: its per-item details and the record id of each test image."""

    folder: Path
    base_model: str
    captions: list[str]
    label_field: str | None
    fingerprint: str
    record_ids: list[str]  # split.json's test order, the order of `details`
    details: EvalDetails


def load_run(folder: str | Path, before: bool = False) -> RunResult:
    """A finished run's test results (`before`: its starting model's); one line naming what is missing."""
    folder = Path(folder)
    paths = RunPaths(folder)
    config_path, split_path, results = paths.config, paths.split, paths.test_before if before else paths.test_after
    if not folder.is_dir() or not config_path.is_file():
        raise InputError(f"{folder}: not a run folder (no {config_path.name}); pass folders that finetune.py "
                         "wrote under runs/")
    if not split_path.is_file():
        raise InputError(f"{folder}: has no {split_path.name} (a run from before test sets); rerun it to compare")
    split = json.loads(read_small_text(split_path))
    if not split.get("test"):
        raise InputError(f"{folder}: has no test set; rerun with --test-fraction (e.g. 0.1) to compare runs")
    if not results.is_file():
        raise InputError(f"{folder}: has no {results.name}; the run did not finish (finetune.py --resume finishes it)")
    config = json.loads(read_small_text(config_path))
    details = EvalDetails.load(results)
    ids = [str(i) for i in split["test"]]
    if len(ids) != details.ranks["i2t"].size:
        raise InputError(f"{folder}: {results.name} has {details.ranks['i2t'].size} items, "
                         f"{split_path.name} {len(ids)} test ids; the run folder is inconsistent")
    return RunResult(folder, str(config.get("model")), list(config.get("captions") or []),
                     config.get("label_field"), split["fingerprint"], ids, details)


def check_same_test_set(runs: Sequence[RunResult]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if run.fingerprint != first.fingerprint or sorted(run.record_ids) != sorted(first.record_ids):
            shared = len(set(run.record_ids) & set(first.record_ids))
            raise InputError(
                f"{run.folder}: its test set differs from {first.folder}'s (fingerprint {run.fingerprint[:12]} vs "
                f"{first.fingerprint[:12]}; {shared} of {len(first.record_ids)} test records shared); compare runs "
                "made from the same records with the same --seed, --stratify, --val-fraction and --test-fraction")


def notes(runs: Sequence[RunResult]) -> list[str]:
    """What the reader must know: different base models, different captions."""
    out = []
    if len({r.base_model for r in runs}) > 1:
        out.append("note: the runs start from different base models ("
                   + "; ".join(f"{r.folder.name}: {r.base_model}" for r in runs)
                   + "); differences include the base model's")
    if len({tuple(r.captions) for r in runs}) > 1:
        out.append("note: the runs use different caption templates; retrieval is scored against each run's own "
                   "test captions (the same images), zero-shot against the same label prompts")
    apart = [r.folder.name for r in runs[1:] if not scores.same_captions(runs[0].details, r.details)]
    if apart:
        out.append(f"note: {', '.join(apart)} ranks other test captions than {runs[0].folder.name}, so its t2i and "
                   "mean_R@1 differences pair the test images (each image's own caption, ranked in its own run); "
                   "the scores count each distinct caption once, so a difference need not equal their gap")
    return out


def run_row(run: RunResult, first: RunResult | None, name: str) -> dict:
    """One table row: each score with its interval, and (`first` given) the paired difference from it."""
    row: dict = {"run": name, "base_model": run.base_model, "captions": run.captions, "metrics": {}}
    for key in scores.score_keys(run.details):
        found = scores.score_and_interval(run.details, key)
        if found is None:
            continue
        entry = {"value": found[0], "ci95": found[1], "n": scores.items_of(run.details, key)}
        if first is not None:
            change = scores.change(first.details, run.details, key, first.record_ids, run.record_ids)
            if change is not None:
                items = change[2]
                entry.update({"diff": change[0], ci_key("diff"): change[1], "items": items,
                              "words": words_for(change[1], items)})
        row["metrics"][key] = entry
    return row


def compare(folders: Sequence[str | Path]) -> dict:
    """Each run's test scores with 95 % intervals (as its metrics.json has them), the first run's
    base model, and each row minus the first run with a paired interval."""
    if len(folders) < 2:
        raise InputError("compare needs two or more run folders, e.g. compare.py runs/a runs/b")
    runs = [load_run(f) for f in folders]
    check_same_test_set(runs)
    first = runs[0]
    rows = [run_row(run, None if run is first else first, str(run.folder)) for run in runs]
    base = None
    if RunPaths(first.folder).test_before.is_file():  # which base, when the runs start from several
        named = BASE_ROW if len({r.base_model for r in runs}) == 1 else f"{first.folder.name}'s {BASE_ROW}"
        base = run_row(load_run(first.folder, before=True), first, named)
        base["base_model"] = first.base_model
    return {"test_size": len(first.record_ids), "fingerprint": first.fingerprint, "runs": rows, "base": base,
            "notes": notes(runs),
            "method": "The runs' own test scores and 95 % percentile bootstrap intervals (1000 resamples, seeded, "
                      "as finetune computes them); differences resample the same test items for both runs "
                      "(paired). An interval that excludes 0 is a difference (better / worse); one that "
                      f"includes 0 is not distinguishable; one on fewer than {MIN_ITEMS} paired items is {TOO_FEW}"}


def _cell(entry: dict | None) -> str:
    """A score with its interval; the point alone on fewer than MIN_ITEMS items (2 query images
    bootstrap to [1.000, 1.000], which says nothing)."""
    return "-" if entry is None else score_text(entry["value"], entry["ci95"], entry.get("n"))


def _diff(entry: dict | None) -> str:
    if entry is None or "diff" not in entry:
        return ""
    return change_text(entry["diff"], entry[ci_key("diff")], entry["items"])


def _rows(result: dict) -> list[dict]:
    return result["runs"] + ([result["base"]] if result.get("base") else [])


def _keys(result: dict) -> list[str]:
    present = {k for row in _rows(result) for k in row["metrics"]}
    return [k for k in SCORE_KEYS if k in present]


def text_table(result: dict) -> str:
    """The console table: one block per metric, one line per run (and the base model)."""
    names = [Path(r["run"]).name for r in _rows(result)]
    width = max(map(len, names)) + 2
    key_width = max(map(len, ["metric", *_keys(result)]))
    lines = [f"held-out test set: {result['test_size']} images (fingerprint {result['fingerprint'][:12]}), "
             f"shared by all {len(result['runs'])} runs", *result["notes"],
             f"{'metric':<{key_width}} {'run':<{width}} {'score [95% CI]':<24} difference from {names[0]} [paired 95% CI]"]
    for key in _keys(result):
        for name, run in zip(names, _rows(result)):
            entry = run["metrics"].get(key)
            if entry is not None:
                lines.append(f"{key:<{key_width}} {name:<{width}} {_cell(entry):<24} {_diff(entry)}")
    return "\n".join(lines)


def html_page(result: dict, chart: Path | None = None) -> str:
    """A self-contained page: the differences chart, then the table (see mlx_clip.outputs.report.html)."""
    from ..outputs.report.html import Raw, esc, img, page, png_file_uri, table, words_class

    names = [Path(r["run"]).name for r in _rows(result)]
    rows = []
    for key in _keys(result):
        entries = [run["metrics"].get(key) for run in _rows(result)]
        cells = []
        for e in entries:
            words = e.get("words") if e else None
            cls = words_class(words)
            diff = f'<br><span class="{cls}">{esc(_diff(e))}</span>' if _diff(e) else ""
            cells.append(Raw(esc(_cell(e)) + diff))
        rows.append([key] + cells)
    runs = table(["run", "base model", "caption templates"],
                 [[r["run"], r["base_model"], " | ".join(r["captions"]) or "(default)"] for r in _rows(result)])
    uri = png_file_uri(chart) if chart else None
    body = (f"<h1>Comparison: {esc(' vs '.join(names[:len(result['runs'])]))}</h1>"
            f"<p>Held-out test set of {result['test_size']} images shared by every run (fingerprint "
            f"<code>{esc(result['fingerprint'][:12])}</code>). {esc(result['method'], limit=None)}. Under each row: its "
            f"difference from {esc(names[0])}.</p>"
            + "".join(f"<p><b>{esc(n, limit=None)}</b></p>" for n in result["notes"])
            + (f"<div class=plots>{img(uri, 'paired differences from ' + names[0])}</div>" if uri else "")
            + table(["metric"] + names, rows, numeric=tuple(range(1, len(names) + 1))) + runs
            + "<p class='muted small'>mean_R@1 = (i2t_R@1 + t2i_R@1) / 2; i2t_R@k: the image's caption in the "
              "top k; t2i_R@k: the caption finds an image with that caption in the top k; zero_shot_acc: the "
              "nearest label prompt is the image's label; i2i_R@k: another image of its group in the top k.</p>")
    return page("compare " + " vs ".join(names), body)


def write(result: dict, out: Path) -> tuple[Path, Path]:
    from ..outputs.plots import differences_chart

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", result)
    chart = differences_chart(out / "compare.png", result)
    write_text(out / "compare.html", html_page(result, chart))
    return out / "compare.json", out / "compare.html"


def default_out(folders: Sequence[str | Path]) -> Path:
    """runs/compare-a-b beside the first run."""
    first = Path(folders[0])
    return first.parent / ("compare-" + "-".join(Path(f).name for f in folders))


def main_compare(folders: Sequence[str], out: str | None, say: Callable[[str], None] = print) -> Path:
    result = compare(folders)
    say(text_table(result))
    json_path, html_path = write(result, Path(out) if out else default_out(folders))
    say(f"wrote {json_path} and {html_path}")
    return json_path
