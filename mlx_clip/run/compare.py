"""Compare fine-tuning runs on one shared held-out test set, with paired bootstrap intervals.

Each run folder holds split.json (its test record ids and their fingerprint) and
eval_test.npz (the best model's per-item test results, in split.json's test order). Runs are
compared only when their test sets are the same records; then every run's difference from
the first is resampled over the same test images (a paired bootstrap), which is much
tighter than comparing two separate intervals.

Scores are per test image, so they pair across runs even when the caption templates differ:
  i2t@k   the image's own caption ranks in the top k among the run's distinct test captions
  t2i@1   the image's caption retrieves an image with that caption first
  mean@1  (i2t@1 + t2i@1) / 2 per image
  0-shot  the image's label is the nearest label prompt (runs with --label-field)
With repeated captions t2i@1 and mean@1 weigh a caption by its images, so they can differ
slightly from the run's own figures, which count each distinct caption once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError
from ..io import write_json, write_text
from ..outputs.run_paths import RunPaths
from ..train.evaluate import EvalDetails, bootstrap_ci, paired_bootstrap_ci

METRICS = ("mean@1", "i2t@1", "i2t@5", "i2t@10", "t2i@1", "0-shot")


@dataclass
class RunResult:
    """One run's test-set results, per image, in sorted record-id order."""

    folder: Path
    base_model: str
    captions: list[str]
    label_field: str | None
    fingerprint: str
    record_ids: list[str]
    scores: dict[str, np.ndarray]  # metric -> per-image 0/1 (NaN where it does not apply)


def per_image_scores(details: EvalDetails) -> dict[str, np.ndarray]:
    """Every metric as one value per test image (see the module docstring)."""
    i2t = details.ranks["i2t"]
    t2i_of_image = details.ranks["t2i"][details.caption_of_image] <= 1
    scores = {f"i2t@{k}": (i2t <= k).astype(np.float64) for k in (1, 5, 10)}
    scores["t2i@1"] = t2i_of_image.astype(np.float64)
    scores["mean@1"] = (scores["i2t@1"] + scores["t2i@1"]) / 2
    zero_shot = np.full(i2t.shape, np.nan)
    if details.zero_shot is not None:
        zero_shot[details.zero_shot.index] = details.zero_shot.correct
    scores["0-shot"] = zero_shot
    return scores


def load_run(folder: str | Path) -> RunResult:
    """A finished run's test results; one line naming what is missing otherwise."""
    folder = Path(folder)
    paths = RunPaths(folder)
    config_path, split_path, results = paths.config, paths.split, paths.test_after
    if not folder.is_dir() or not config_path.is_file():
        raise InputError(f"{folder}: not a run folder (no {config_path.name}); pass folders that finetune.py "
                         "wrote under runs/")
    if not split_path.is_file():
        raise InputError(f"{folder}: has no {split_path.name} (a run from before test sets); rerun it to compare")
    split = json.loads(split_path.read_text(encoding="utf-8"))
    if not split.get("test"):
        raise InputError(f"{folder}: has no test set; rerun with --test-fraction (e.g. 0.1) to compare runs")
    if not results.is_file():
        raise InputError(f"{folder}: has no {results.name}; the run did not finish (finetune.py --resume finishes it)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    details = EvalDetails.load(results)
    ids = list(split["test"])
    if len(ids) != details.ranks["i2t"].size:
        raise InputError(f"{folder}: {results.name} has {details.ranks['i2t'].size} items, "
                         f"{split_path.name} {len(ids)} test ids; the run folder is inconsistent")
    order = np.argsort(np.array(ids, dtype=object), kind="stable")
    scores = {k: v[order] for k, v in per_image_scores(details).items()}
    return RunResult(folder, str(config.get("model")), list(config.get("captions") or []),
                     config.get("label_field"), split["fingerprint"], [ids[i] for i in order], scores)


def check_same_test_set(runs: Sequence[RunResult]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if run.fingerprint != first.fingerprint or run.record_ids != first.record_ids:
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
    return out


def compare(folders: Sequence[str | Path]) -> dict:
    """Each run's test scores with 95 % intervals, and each run minus the first with a paired interval."""
    if len(folders) < 2:
        raise InputError("compare needs two or more run folders, e.g. compare.py runs/a runs/b")
    runs = [load_run(f) for f in folders]
    check_same_test_set(runs)
    first = runs[0]
    rows = []
    for run in runs:
        row: dict = {"run": str(run.folder), "base_model": run.base_model, "captions": run.captions, "metrics": {}}
        for metric in METRICS:
            values, base = run.scores[metric], first.scores[metric]
            both = ~np.isnan(values) & ~np.isnan(base)
            if not both.any():
                continue
            entry = {"value": float(values[both].mean()), "ci95": bootstrap_ci(values[both]), "n": int(both.sum())}
            if run is not first:
                entry["diff"] = float(values[both].mean() - base[both].mean())
                entry["diff_ci95"] = paired_bootstrap_ci(base[both], values[both])
            row["metrics"][metric] = entry
        rows.append(row)
    return {"test_size": len(first.record_ids), "fingerprint": first.fingerprint, "runs": rows,
            "notes": notes(runs),
            "method": "per test image scores; 95 % percentile bootstrap over the test images (1000 resamples, "
                      "seeded); differences resample the same images for both runs (paired)"}


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    low, high = entry["ci95"]
    return f"{entry['value']:.3f} [{low:.3f}, {high:.3f}]"


def _diff(entry: dict | None) -> str:
    if entry is None or "diff" not in entry:
        return ""
    low, high = entry["diff_ci95"]
    verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
    return f"{entry['diff']:+.3f} [{low:+.3f}, {high:+.3f}] {verdict}"


def text_table(result: dict) -> str:
    """The console table: one block per metric, one line per run."""
    names = [Path(r["run"]).name for r in result["runs"]]
    width = max(map(len, names)) + 2
    lines = [f"held-out test set: {result['test_size']} images (fingerprint {result['fingerprint'][:12]}), "
             f"shared by all {len(names)} runs", *result["notes"],
             f"{'metric':<8} {'run':<{width}} {'score [95% CI]':<24} difference from {names[0]} [paired 95% CI]"]
    for metric in METRICS:
        for name, run in zip(names, result["runs"]):
            entry = run["metrics"].get(metric)
            if entry is not None:
                lines.append(f"{metric:<8} {name:<{width}} {_cell(entry):<24} {_diff(entry)}")
    return "\n".join(lines)


def html_page(result: dict) -> str:
    """A self-contained page with the same table (see mlx_clip.outputs.report.html)."""
    from ..outputs.report.html import esc, page, table

    names = [Path(r["run"]).name for r in result["runs"]]
    header = ["metric"] + [f"{n}" for n in names]
    rows = []
    for metric in METRICS:
        entries = [run["metrics"].get(metric) for run in result["runs"]]
        if any(entries):
            rows.append([metric] + [_cell(e) + (f"\n{_diff(e)}" if _diff(e) else "") for e in entries])
    runs = table(["run", "base model", "caption templates"],
                 [[r["run"], r["base_model"], " | ".join(r["captions"]) or "(default)"] for r in result["runs"]])
    body = (f"<h1>Comparison: {esc(' vs '.join(names))}</h1>"
            f"<p>Held-out test set of {result['test_size']} images shared by every run (fingerprint "
            f"<code>{esc(result['fingerprint'][:12])}</code>). {esc(result['method'], limit=None)}. Under each later run: its "
            f"difference from {esc(names[0])} and whether the paired interval excludes 0.</p>"
            + "".join(f"<p><b>{esc(n, limit=None)}</b></p>" for n in result["notes"])
            + runs + table(header, rows, numeric=tuple(range(1, len(header))))
            + "<p class='muted small'>mean@1 = (i2t@1 + t2i@1) / 2 per image; i2t@k: the image's caption in the "
              "top k; t2i@1: the caption finds an image with that caption first; 0-shot: nearest label prompt.</p>")
    return page("compare " + " vs ".join(names), body.replace("\n", "<br>"))  # the diff under its score


def write(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", result)
    write_text(out / "compare.html", html_page(result))
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
