"""report.html: self-contained, complete, and rendered without errors by a real headless Chromium."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlx_clip import finetune
from browser import find_chromium, inspect_page
from mlx_clip.train.evaluate import EvalDetails

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")


@pytest.fixture(scope="module")
def run_dir(tiny_hf, shapes_manifest, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert finetune.main(["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(runs),
                          "--name", "rep", "--caption", "a {colour} {shape}", "--label-field", "label",
                          "--batch-size", "16", "--epochs", "2", "--lr", "1e-3", "--no-progress",
                          "--val-fraction", "0.15"]) == 0  # 29 validation images: 20 or more get intervals
    return runs / "rep"


def test_metrics_carry_intervals_and_validation_size(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for row in metrics["history"]:
        assert row["val_size"] == metrics["val_records"] > 0
        for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_R@1", "zero_shot_acc"):
            low, high = row[f"{key}_ci95"]
            assert 0 <= low <= row[key] <= high <= 1, key
    before = EvalDetails.load(run_dir / "eval_before.npz")
    first = metrics["history"][0]
    assert before.ranks["i2t"].shape == (first["val_size"],)
    assert float((before.ranks["i2t"] <= 1).mean()) == pytest.approx(first["i2t_R@1"])
    assert float(before.zero_shot.correct.mean()) == pytest.approx(first["zero_shot_acc"])
    card = (run_dir / "model" / "README.md").read_text()
    assert re.search(r"\d\.\d+[^\n|]*\[?\d\.\d+\s*[,–-]\s*\d\.\d+", card), "model card shows no interval"


def test_report_is_self_contained_and_complete(run_dir):
    html = (run_dir / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r'(href|src)="(?!data:|#)', html) and "<link" not in html and "url(" not in html
    for heading in ("Verdict", "Validation: what picked the epoch", "What it kept of the base model", "Data", "Training curves", "Before and after", "Text → image retrieval",
                    "Zero-shot accuracy per label", "Worst mistakes", "Configuration"):
        assert f"<h2>{heading}" in html, heading
    assert html.count('class="query"') == 8 + 6  # 8 examples, 6 worst mistakes
    assert html.count("before<br>rank") == 8 and html.count("after<br>rank") == 8
    assert html.count("data:image/png;base64,") == 2  # loss.png and recall.png
    assert "[paired 95 % CI]" in html and "truncated" in html and "red circle" in html
    assert html.count('class="mark"') >= 6  # every worst mistake shows its correct image, marked


@needs_chromium
def test_report_renders_in_chromium(run_dir, tmp_path):
    result = inspect_page(run_dir / "report.html", tmp_path / "report.png", CHROMIUM)
    assert result["errors"] == []
    thumbnails = [i for i in result["images"] if i["src"].startswith("data:image/jpeg")]
    assert len(thumbnails) == 8 * 2 * 5 + 6 * 5
    broken = [i for i in result["images"] if not (i["complete"] and i["naturalWidth"] > 0)]
    assert broken == []
    assert all(i["naturalWidth"] <= 64 for i in thumbnails)
    with Image.open(result["screenshot"]) as shot:
        assert shot.width >= 800 and shot.height > 2000
        pixels = np.asarray(shot.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # not a blank page
    assert (np.abs(pixels[..., 1] - pixels[..., 0]) > 80).mean() > 1e-4  # the green "correct" borders drawn


@needs_chromium
def test_page_check_catches_broken_images_and_console_errors(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="data:image/jpeg;base64,AAAA" alt="x">'
                    '<script>console.error("boom")</script></body></html>')
    result = inspect_page(page, tmp_path / "broken.png", CHROMIUM)
    assert any("boom" in e for e in result["errors"])
    assert result["images"][0]["naturalWidth"] == 0


WORSE_HISTORY = [{"epoch": 0, "train_loss": None, "mean_R@1": 0.40, "i2t_R@1": 0.40, "t2i_R@1": 0.40},
                 {"epoch": 1, "train_loss": 2.0, "mean_R@1": 0.30, "i2t_R@1": 0.30, "t2i_R@1": 0.30},
                 {"epoch": 2, "train_loss": 1.9, "mean_R@1": 0.35, "i2t_R@1": 0.35, "t2i_R@1": 0.35}]


def test_a_run_below_the_starting_model_is_said_plainly_everywhere():
    from mlx_clip.run.console import run_warnings, summary
    from mlx_clip.outputs.model_card import render
    from mlx_clip.outputs.report.judging import verdict_section

    best = {"epoch": 2, "score": 0.35}
    plain = "scores below the starting model"
    text = summary(Path("runs/x"), WORSE_HISTORY, best, {"max_rss_bytes": 1})
    assert f"warning: the fine-tuned model {plain} (validation mean recall@1 0.400 before, 0.350 after" in text
    assert plain in verdict_section({}, run_warnings(WORSE_HISTORY, best))
    card = render({"base_model": "openai/clip-vit-base-patch32",
                   "metrics": {"before": WORSE_HISTORY[0], "after": WORSE_HISTORY[2],
                               "warnings": run_warnings(WORSE_HISTORY, best)}})
    assert plain in card
    better = [WORSE_HISTORY[0], {**WORSE_HISTORY[1], "mean_R@1": 0.45}]
    assert plain not in summary(Path("runs/x"), better, {"epoch": 1}, {"max_rss_bytes": 1})
    assert plain not in verdict_section({}, run_warnings(better, {"epoch": 1}))
    assert run_warnings(better, {"epoch": 1}) == []


def test_stuck_warning_after_warmup_only():
    from mlx_clip.run.console import stuck_warning

    chance = float(np.log(32))
    assert "stays at chance level" in stuck_warning(3, [chance * 0.99] * 4, [32] * 4, first_step=8, warmup_steps=2)
    above = stuck_warning(3, [chance * 1.5] * 4, [32] * 4, first_step=8, warmup_steps=2)
    assert "is above chance level" in above and "not learning" in above
    falling = stuck_warning(3, [chance * 2, chance * 1.9, chance * 1.5, chance * 1.3], [32] * 4, first_step=8,
                            warmup_steps=2)
    assert "is above chance level" in falling and "falling" in falling and "not learning" not in falling
    assert stuck_warning(3, [chance * 0.9] * 4, [32] * 4, first_step=8, warmup_steps=2) is None  # learning
    assert stuck_warning(1, [chance] * 4, [32] * 4, first_step=0, warmup_steps=4) is None  # all in warmup
    early = stuck_warning(1, [chance] * 8, [32] * 8, first_step=0, warmup_steps=6)  # 2 steps after warmup
    assert "only 2 steps after warmup so far, too few to tell" in early and "not learning" not in early
    # falling over the whole epoch (warmup included) is learning, whatever one spike after warmup says
    spiky = [135.7, 94.4, 47.8, 43.0, 45.3, 41.0, 68.0, 50.8, 44.3, 27.9]  # a tiny SigLIP's first epoch
    first = stuck_warning(1, [x / 10 for x in spiky], [32] * 10, first_step=0, warmup_steps=3)
    assert "is above chance level" in first and "falling" in first and "not learning" not in first


def test_stuck_epochs_a_later_epoch_left_behind_are_one_line():
    """The tour's run: epochs 1-3 at chance, then learning. Its record says so once, not as stuck;
    a run stuck to its end is one line too, not one per epoch."""
    from mlx_clip.run.console import run_warnings

    def row(epoch, stuck):
        return {"epoch": epoch, "loss": 4.0, **({"warning": f"warning: epoch {epoch}: ... stays at chance level"}
                                                 if stuck else {})}

    start = {"epoch": 0, "mean_R@1": 0.1}
    late = [start, row(1, True), row(2, True), row(3, True), row(4, False), row(5, False)]
    assert run_warnings(late, {"epoch": 5}) == [
        "warning: epochs 1-3: the training loss after warmup stayed at or above chance level; it fell below from epoch 4, "
        "so the model learned late (a higher --lr may get there sooner)"]
    still = [start, row(1, False), row(2, True), row(3, True)]  # stuck at the end: which epochs, and the last's line
    assert run_warnings(still, {"epoch": 3}) == ["warning: epochs 2-3 stayed at or above chance level; epoch 3: ... stays at "
                                                 "chance level"]
    once = [start, row(1, False), row(2, True)]
    assert run_warnings(once, {"epoch": 2}) == [once[2]["warning"]]
    gaps = [start, row(1, True), row(2, False), row(3, True), row(4, False)]
    assert run_warnings(gaps, {"epoch": 4})[0].startswith("warning: epochs 1, 3: ")


def test_the_summary_gives_no_interval_to_image_to_image_recall_on_a_handful_of_queries():
    """Two query images bootstrap to [1.000, 1.000]: the console line says too few instead."""
    from mlx_clip.run.console import test_line

    def test_of(queries: int) -> dict:
        side = {"mean_R@1": 0.5, "mean_R@1_ci95": [0.4, 0.6], "i2i_R@1": 1.0, "i2i_R@1_ci95": [1.0, 1.0],
                "i2i_queries": queries}
        return {"size": 61, "before": dict(side, **{"i2i_R@1": 0.0, "i2i_R@1_ci95": [0.0, 0.0]}), "after": side}

    few = test_line(test_of(2))
    assert "image-to-image recall@1 0.000 -> 1.000 (2 query images with another of their group: too few to tell" in few
    assert "[1.000, 1.000]" not in few and "0.500 [0.400, 0.600]" in few
    assert "1.000 [1.000, 1.000] (30 query images with another of their group)" in test_line(test_of(30))


def test_the_validation_section_names_where_the_verdict_came_from_and_no_interval_on_a_handful():
    """A run without a test set takes its verdict from validation too: the section must not say it
    came from a held-out test set; on 12 images the scores stand alone, as the verdict's do."""
    from mlx_clip.outputs.report import summary_section

    def history(images: int) -> list[dict]:
        return [{"epoch": epoch, "mean_R@1": score, "mean_R@1_ci95": [0.0, 0.208], "zero_shot_acc": 0.25,
                 "zero_shot_acc_ci95": [0.0, 0.5], "val_size": images, "val_captions": images}
                for epoch, score in ((0, 0.042), (1, 0.083))]

    few = summary_section(history(12), {"epoch": 1}, None, None, has_test=False)
    assert "this run has no test set (--test-fraction), so the verdict above comes from these images too" in few
    assert "held-out test set" not in few and "[0.000, 0.208]" not in few and "0.042 before → 0.083 after" in few
    enough = summary_section(history(40), {"epoch": 1}, None, None, has_test=True)
    assert "the verdict above comes from the held-out test set" in enough
    assert "0.042 [0.000, 0.208] before → 0.083 [0.000, 0.208] after" in enough


def test_records_without_a_label_are_not_a_label_value():
    """A nested catalogue's untyped records counted '(missing)' as one of '10 values' of object.type."""
    from collections import Counter

    from mlx_clip.data.training_set import MISSING_LABEL
    from mlx_clip.outputs.report import labels_heading

    counts = Counter({"Flags": 3, MISSING_LABEL: 2, "Coins": 1})
    assert labels_heading("object.type", counts) == "<h3>Labels (object.type): 2 values (2 records without one)</h3>"
    assert labels_heading("period", Counter({"Roman": 1})) == "<h3>Labels (period): 1 value</h3>"
