"""Bootstrap intervals, nested learning-curve subsets, the flattening rule, and curve.py end to end."""

import json

import numpy as np
import pytest

from mlx_clip import curve
from mlx_clip.run.learning_curve import flattening_size, gains_per_100, nested_subsets, parse_sizes
from mlx_clip.errors import InputError
from mlx_clip.train.bootstrap import bootstrap_ci, paired_bootstrap_ci
from mlx_clip.train.evaluate import (
    retrieval_intervals,
    retrieval_metrics,
    retrieval_ranks,
)


def test_bootstrap_interval_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 80, 320, 1280):
        hits = rng.random(n) < 0.4
        low, high = bootstrap_ci(hits)
        assert low <= hits.mean() <= high
        assert 0 <= low < high <= 1
        widths.append(high - low)
    assert all(a > b for a, b in zip(widths, widths[1:])), widths
    # roughly the binomial width 2 * 1.96 * sqrt(p (1 - p) / n)
    assert widths[-1] == pytest.approx(2 * 1.96 * np.sqrt(0.24 / 1280), rel=0.25)


def test_bootstrap_is_seeded_and_degenerate_cases():
    hits = np.arange(50) % 3 == 0
    assert bootstrap_ci(hits) == bootstrap_ci(hits)
    assert bootstrap_ci(hits, seed=1) != bootstrap_ci(hits, seed=2)
    assert bootstrap_ci(np.ones(30)) == [1.0, 1.0]
    assert bootstrap_ci(np.zeros(0)) is None


def test_paired_bootstrap_sees_a_consistent_small_gain():
    rng = np.random.default_rng(0)
    before = rng.random(400) < 0.5
    after = before.copy()
    after[np.flatnonzero(~before)[:30]] = True  # 30 items fixed, none broken: +0.075
    low, high = paired_bootstrap_ci(before, after)
    assert 0 < low <= 0.075 <= high
    # unpaired intervals of the two means overlap although the paired change is clearly positive
    assert bootstrap_ci(after)[0] < bootstrap_ci(before)[1]


def test_retrieval_intervals_bracket_the_metrics():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(60, 8))
    captions = images[::2] + rng.normal(scale=1.5, size=(30, 8))  # two images per caption
    of_image = np.repeat(np.arange(30), 2)
    metrics = retrieval_metrics(images, captions, of_image)
    intervals = retrieval_intervals(retrieval_ranks(images, captions, of_image))
    for key in ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@10", "mean_R@1"):
        low, high = intervals[f"{key}_ci95"]
        assert low <= metrics[key] <= high, key


def test_nested_subsets_are_prefixes_of_one_permutation():
    train = list(range(100, 400))
    subsets = nested_subsets(train, [50, 10, 200, 300], seed=7)
    assert list(subsets) == [10, 50, 200, 300]
    sizes = list(subsets)
    for small, large in zip(sizes, sizes[1:]):
        assert set(subsets[small]) < set(subsets[large])
    assert all(len(set(s)) == n and set(s) <= set(train) for n, s in subsets.items())
    assert sorted(subsets[300]) == train
    assert subsets[10] != train[:10]  # random, not the file's first records
    assert nested_subsets(train, [10], seed=7)[10] == subsets[10]
    assert nested_subsets(train, [10], seed=8)[10] != subsets[10]
    with pytest.raises(InputError, match="larger than the training split"):
        nested_subsets(train, [301])


def test_flattening_rule():
    sizes = [100, 200, 400, 800]
    assert gains_per_100(sizes, [0.1, 0.2, 0.3, 0.34]) == pytest.approx([0.1, 0.05, 0.01])
    assert flattening_size(sizes, [0.1, 0.2, 0.3, 0.34], 0.02) == 400
    assert flattening_size(sizes, [0.1, 0.2, 0.3, 0.34], 0.06) == 200
    assert flattening_size(sizes, [0.1, 0.2, 0.3, 0.34], 0.005) is None  # still rising
    assert flattening_size(sizes, [0.1, 0.11, 0.3, 0.301], 0.02) == 400  # a later jump resets it
    assert parse_sizes("400, 100,200,100") == [100, 200, 400]
    with pytest.raises(InputError):
        parse_sizes("100,lots")


def test_curve_cli_end_to_end(tiny_hf, shapes_manifest, tmp_path):
    runs = tmp_path / "runs"
    code = curve.main(["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(runs),
                       "--name", "lc", "--caption", "a {colour} {shape}", "--label-field", "label",
                       "--batch-size", "16", "--epochs", "1", "--lr", "1e-3", "--no-progress",
                       "--sizes", "64,16,32", "--survey-margin", "0.05"])
    assert code == 0
    result = json.loads((runs / "lc" / "curve.json").read_text())
    assert result["sizes"] == [16, 32, 64]
    assert [p["size"] for p in result["points"]] == [0, 16, 32, 64]
    manifest_ids = [json.loads(line)["id"] for line in shapes_manifest.read_text().splitlines()]
    val = set(result["val_ids"])
    assert len(val) == result["val_size"] > 0
    order = result["subset_order"]
    assert len(order) == 64 and len(set(order)) == 64 and not val & set(order) and set(order) <= set(manifest_ids)
    for point in result["points"]:
        assert point["val_size"] == result["val_size"]  # one validation set for every size
        for key in ("mean_R@1", "i2t_R@1", "t2i_R@5", "zero_shot_acc"):
            low, high = point[f"{key}_ci95"]
            assert low <= point[key] <= high
    assert result["survey"]["size"] == 130  # 192 / (1 + 192 * 0.05^2)
    png = runs / "lc" / "curve.png"
    assert png.stat().st_size > 20_000
    html = (runs / "lc" / "curve.html").read_text()
    assert "data:image/png;base64," in html and "survey formula" in html


def test_curve_cli_rejects_sizes_beyond_the_training_split(tiny_hf, shapes_manifest, tmp_path, capsys):
    code = curve.main(["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path),
                       "--batch-size", "16", "--no-progress", "--sizes", "16,5000"])
    assert code == 2
    assert "larger than the training split" in capsys.readouterr().err


def _point(size, change, low, high, items=None):
    from mlx_clip.train.bootstrap import words_for

    step = {"change": change, "ci95": [low, high], "items": items, "words": words_for([low, high], items)}
    return {"size": size, "mean_R@1": 0.2 + change, "vs_start": step, "vs_previous": step}


def _curve_result(points, flat_at=None):
    from mlx_clip.run.learning_curve import distinguishable_at

    points = [{"size": 0, "mean_R@1": 0.2}] + points
    return {"points": points, "sizes": [p["size"] for p in points[1:]], "flat_threshold": 0.01, "flat_at": flat_at,
            "distinguishable_at": distinguishable_at(points), "survey": None}


def test_curve_words_never_contradict_the_intervals():
    """Overlapping intervals: "cannot tell yet", never "flattens"; the first size whose paired interval
    against the start excludes 0 is named."""
    from mlx_clip.run.learning_curve import curve_summary

    unclear = curve_summary(_curve_result([_point(300, 0.02, -0.01, 0.05), _point(1200, 0.03, -0.005, 0.06)]))
    assert "cannot tell yet: at no measured size" in unclear and "cannot tell yet whether more images help" in unclear
    assert "flattens" not in unclear and "distinguishable at" not in unclear
    clear = curve_summary(_curve_result([_point(300, 0.02, -0.01, 0.05), _point(1200, 0.09, 0.04, 0.14)]))
    assert "becomes distinguishable at 1200 images" in clear and "more images still help" in clear
    assert "cannot tell yet: at no" not in clear
    few = curve_summary(_curve_result([_point(300, 0.02, -0.01, 0.05), _point(600, -0.5, -0.6, -0.4, items=8)]))
    assert "cannot tell yet whether more images help" in few and "made it worse" not in few  # 8 items: no words
    assert "-0.500, too few to tell (8 items)" in few and "[-0.600" not in few  # and no interval


def test_curve_lines_give_no_interval_on_a_handful_of_validation_images():
    from mlx_clip.run.learning_curve import _point_line

    point = {"size": 16, "mean_R@1": 0.25, "mean_R@1_ci95": [0.1, 0.4], "zero_shot_acc": 0.5,
             "zero_shot_acc_ci95": [0.3, 0.7]}
    assert "mean R@1 0.250, zero-shot 0.500 (" in _point_line(dict(point, val_size=12), 1.0)
    assert "mean R@1 0.250 [0.100, 0.400], zero-shot 0.500 [0.300, 0.700]" in _point_line(dict(point, val_size=40), 1.0)
