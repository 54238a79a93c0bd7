"""A tiny CLIP trained from random weights learns coloured shapes: held-out zero-shot far above chance."""

import json

import finetune


def test_tiny_clip_learns_shapes(tiny_hf, shapes_manifest, tmp_path, capsys):
    code = finetune.main([
        "--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path), "--name", "learn",
        "--caption", "a {colour} {shape}", "--label-field", "label", "--label-prompt", "a {label}",
        "--val-fraction", "0.25", "--batch-size", "32", "--epochs", "12", "--lr", "2e-3", "--warmup", "0.05",
        "--weight-decay", "0", "--crop-min-area", "0.8", "--no-progress",
    ])
    assert code == 0
    metrics = json.loads((tmp_path / "learn" / "metrics.json").read_text())
    before, history = metrics["history"][0], metrics["history"][1:]
    best = max(h["zero_shot_acc"] for h in history)
    chance = 1 / 12
    assert before["zero_shot_acc"] < 0.25
    assert best >= 4 * chance, best  # typically ~0.55
    assert max(h["mean_R@1"] for h in history) > before["mean_R@1"] + 0.25
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    out = capsys.readouterr().out
    assert "before" in out and "zero-shot accuracy" in out
