"""compare.py: runs on one test set, paired intervals; refuses different test sets; bad folders are one line."""

import json
import shutil

import numpy as np
import pytest

from mlx_clip import compare
from mlx_clip import finetune
from mlx_clip.train.bootstrap import MIN_ITEMS
from mlx_clip.train.metric_names import MEAN_R1, SCORE_KEYS, ZERO_SHOT, ci_key


def _run(tiny_hf, shapes_manifest, runs, name, *extra):
    argv = ["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(runs), "--name", name,
            "--caption", "a {colour} {shape}", "--label-field", "label", "--label-prompt", "a {label}",
            "--val-fraction", "0.15", "--test-fraction", "0.3", "--batch-size", "32", "--lr", "2e-3",
            "--warmup", "0.05", "--weight-decay", "0", "--crop-min-area", "0.8", "--no-progress", *extra]
    assert finetune.main(argv) == 0
    return runs / name


@pytest.fixture(scope="module")
def runs(tiny_hf, shapes_manifest, tmp_path_factory):
    """base: the starting model (no training); trained: 12 epochs; other_split: another seed's test set."""
    folder = tmp_path_factory.mktemp("runs")
    base = _run(tiny_hf, shapes_manifest, folder, "base", "--epochs", "0")
    trained = _run(tiny_hf, shapes_manifest, folder, "trained", "--epochs", "12")
    other = _run(tiny_hf, shapes_manifest, folder, "other_split", "--epochs", "0", "--seed", "1")
    copy = folder / "base_copy"
    shutil.copytree(base, copy)
    return {"base": base, "trained": trained, "other": other, "copy": copy}


def _result(capsys, *folders, out=None):
    assert compare.main([str(f) for f in folders] + (["--out", str(out)] if out else [])) == 0
    printed = capsys.readouterr().out
    written = folders[0].parent / ("compare-" + "-".join(f.name for f in folders)) if out is None else out
    return json.loads((written / "compare.json").read_text()), printed, written


def test_a_clearly_better_run_has_a_paired_interval_above_zero(runs, capsys):
    result, printed, written = _result(capsys, runs["base"], runs["trained"])
    trained = result["runs"][1]["metrics"]
    assert result["test_size"] == len(json.loads((runs["base"] / "split.json").read_text())["test"]) > 50
    for metric in (ZERO_SHOT, MEAN_R1):
        low, high = trained[metric]["diff_ci95"]
        assert 0 < low <= trained[metric]["diff"] <= high, (metric, trained[metric])
        assert trained[metric]["words"] == "better"
    assert "better" in printed and MEAN_R1 in printed
    html = (written / "compare.html").read_text()
    assert "<table>" in html and "trained" in html and "src=\"http" not in html
    assert html.count("data:image/png;base64,") == 1 and (written / "compare.png").is_file()  # the differences chart


def test_a_copy_of_the_same_run_includes_zero(runs, capsys):
    result, printed, _ = _result(capsys, runs["base"], runs["copy"])
    for metric, entry in result["runs"][1]["metrics"].items():
        low, high = entry["diff_ci95"]
        assert low <= 0 <= high and entry["diff"] == 0, metric
        assert entry["words"] == ("too few to tell" if entry["items"] < MIN_ITEMS else "not distinguishable"), metric
    assert "not distinguishable" in printed and "better" not in printed and "worse" not in printed
    from mlx_clip.run.compare_runs import _diff  # a change on a handful of items: its point, no interval
    assert _diff({"diff": 1.0, "diff_ci95": [1.0, 1.0], "items": 2, "words": "too few to tell"}) == \
        "+1.000, too few to tell (2 items)"
    assert _diff({"diff": 0.1, "diff_ci95": [0.05, 0.2], "items": 40, "words": "better"}) == "+0.100 [+0.050, +0.200] better"
    from mlx_clip.run.compare_runs import _cell  # a score on a handful too: 2 queries bootstrap to [1, 1]
    assert _cell({"value": 1.0, "ci95": [1.0, 1.0], "n": 2}) == "1.000"
    assert _cell({"value": 0.5, "ci95": [0.4, 0.6], "n": 40}) == "0.500 [0.400, 0.600]"
    for row in result["runs"]:  # each score's items are counted as its paired change counts them
        for metric, entry in row["metrics"].items():
            assert entry["n"] == result["runs"][1]["metrics"][metric]["items"], metric


def test_paired_interval_is_narrower_than_separate_ones(runs, capsys):
    """Pairing removes the test items' own difficulty: the difference's interval is tighter than the sum of halves."""
    result, _, _ = _result(capsys, runs["base"], runs["trained"], out=runs["base"].parent / "cmp")
    entry = result["runs"][1]["metrics"][MEAN_R1]
    base = result["runs"][0]["metrics"][MEAN_R1]
    width = entry["diff_ci95"][1] - entry["diff_ci95"][0]
    assert width < (entry["ci95"][1] - entry["ci95"][0]) + (base["ci95"][1] - base["ci95"][0])


def test_compare_prints_the_runs_own_test_figures_and_intervals(runs, capsys):
    """One bootstrap: compare's score and interval for a run are exactly its metrics.json test figures."""
    result, printed, _ = _result(capsys, runs["base"], runs["trained"], out=runs["base"].parent / "same")
    for folder, row in zip((runs["base"], runs["trained"]), result["runs"]):
        after = json.loads((folder / "metrics.json").read_text())["test"]["after"]
        keys = [k for k in SCORE_KEYS if k in after]
        assert MEAN_R1 in keys and ZERO_SHOT in keys
        for key in keys:
            assert row["metrics"][key]["value"] == after[key], key
            assert row["metrics"][key]["ci95"] == after[ci_key(key)], key
        low, high = after[ci_key(MEAN_R1)]
        assert f"{after[MEAN_R1]:.3f} [{low:.3f}, {high:.3f}]" in printed


def test_base_model_row_is_the_first_runs_starting_model(runs, capsys):
    result, printed, written = _result(capsys, runs["trained"], runs["base"], out=runs["base"].parent / "baserow")
    base_row = result["base"]
    before = json.loads((runs["trained"] / "metrics.json").read_text())["test"]["before"]
    assert base_row["metrics"][MEAN_R1]["value"] == before[MEAN_R1]
    assert base_row["metrics"][MEAN_R1]["words"] == "worse"  # the base model is below the trained run
    assert "base model (before fine-tuning)" in printed
    assert "base model (before fine-tuning)" in (written / "compare.html").read_text()


def _error(capsys, *argv) -> str:
    assert compare.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_runs_with_different_test_sets_are_refused(runs, capsys):
    line = _error(capsys, runs["base"], runs["other"])
    assert "test set differs" in line and "other_split" in line and "--seed" in line


def test_bad_folders_are_one_line(runs, tmp_path, capsys):
    assert "not a run folder" in _error(capsys, runs["base"], tmp_path)
    assert "two or more" in _error(capsys, runs["base"])
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["base"], unfinished)
    (unfinished / "eval_test.npz").unlink()
    assert "did not finish" in _error(capsys, runs["base"], unfinished)


def test_different_base_models_are_allowed_but_said(runs, tmp_path, capsys):
    other = tmp_path / "other_model"
    shutil.copytree(runs["base"], other)
    config = json.loads((other / "config.json").read_text())
    config["model"] = "someone/else"
    (other / "config.json").write_text(json.dumps(config))
    result, printed, _ = _result(capsys, runs["base"], other, out=tmp_path / "cmp")
    assert "different base models" in printed and "someone/else" in printed
    assert result["base"]["run"] == f"{runs['base'].name}'s base model (before fine-tuning)"  # whose base it is


def test_runs_with_other_captions_pair_the_images_and_say_so(runs, tiny_hf, shapes_manifest, tmp_path, capsys):
    """Another caption template: t2i differences pair each test image's own caption rank, and the
    console says why a difference need not be the gap between the per-caption scores."""
    from mlx_clip.run.compare_runs import load_run
    from mlx_clip.train import scores
    from mlx_clip.train.bootstrap import paired_change

    argv = ["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path), "--name",
            "shape_only", "--caption", "{shape}", "--label-field", "label", "--label-prompt", "a {label}",
            "--val-fraction", "0.15", "--test-fraction", "0.3", "--epochs", "0", "--no-progress"]
    assert finetune.main(argv) == 0
    result, printed, _ = _result(capsys, runs["trained"], tmp_path / "shape_only", out=tmp_path / "cmp")
    assert "shape_only ranks other test captions than trained, so its t2i and mean_R@1 differences pair" in printed
    first, other = load_run(runs["trained"]), load_run(tmp_path / "shape_only")
    assert not scores.same_captions(first.details, other.details)
    for key in ("t2i_R@1", MEAN_R1):
        expected = paired_change(scores.parts_of(first.details, key, first.record_ids, True),
                                 scores.parts_of(other.details, key, other.record_ids, True))
        entry = result["runs"][1]["metrics"][key]
        assert entry["diff"] == pytest.approx(expected[0]) and entry["items"] == expected[2]
    _, printed, _ = _result(capsys, runs["base"], runs["trained"], out=tmp_path / "cmp2")
    assert "other test captions" not in printed


def _details(captions: list[str], t2i_hits: list[bool]):
    """An evaluation of len(captions) images, one distinct caption each, the given t2i hits at 1."""
    from mlx_clip.train.evaluate import EvalDetails

    n = len(captions)
    t2i = np.where(np.asarray(t2i_hits), 1, 5)
    return EvalDetails(np.zeros((n, 2)), np.zeros((n, 2)), list(captions), np.arange(n),
                       {"i2t": np.full(n, 3), "t2i": t2i})


def test_captions_two_templates_happen_to_share_do_not_narrow_the_pairing():
    """Two templates whose captions coincide on a few records (a field empty there): the t2i
    change pairs all 30 test images, not the 5 shared captions, so it is the gap between the
    two scores (one distinct caption per image here)."""
    from mlx_clip.train import scores

    ids = [f"r{i}" for i in range(30)]
    before = _details([f"coin {i}" + (f", found at site {i}" if i >= 5 else "") for i in range(30)],
                      [i < 6 for i in range(30)])
    after = _details([f"coin {i}" for i in range(30)], [i < 3 or i >= 20 for i in range(30)])
    assert not scores.same_captions(before, after) and scores.same_captions(before, before)
    diff, interval, items = scores.change(before, after, "t2i_R@1", ids, ids)
    assert items == 30 and diff == pytest.approx(13 / 30 - 6 / 30)
    diff, interval, items = scores.change(before, after, MEAN_R1, ids, ids)
    assert items == 30 and diff == pytest.approx((13 / 30 - 6 / 30) / 2)
