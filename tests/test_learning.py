"""A tiny CLIP trained from random weights learns coloured shapes: held-out zero-shot far above chance.
A run whose loss turns NaN stops with one line and keeps only finite weights; a run that cannot
learn (captions that tell no image apart) is flagged as stuck at chance."""

import json

import mlx.core as mx
import numpy as np

from mlx_clip import finetune
from mlx_clip.train.step import Trainer


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


def shapes_args(tiny_hf, shapes_manifest, runs, name, *extra):
    return ["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(runs), "--name", name,
            "--val-fraction", "0.25", "--batch-size", "32", "--no-progress", *extra]


def test_a_loss_that_turns_nan_stops_the_run_and_saves_nothing_non_finite(tiny_hf, shapes_manifest, tmp_path,
                                                                          capsys, monkeypatch):
    step_inputs, calls = Trainer.step_inputs, []

    def poisoned(self, input_ids, pixel_values, **extra):  # the 7th batch (epoch 2, step 2) holds a NaN pixel
        calls.append(1)
        if len(calls) == 7:
            pixel_values = np.array(pixel_values)
            pixel_values[0, 0, 0, 0] = np.nan
        return step_inputs(self, input_ids, pixel_values, **extra)

    monkeypatch.setattr(Trainer, "step_inputs", poisoned)
    code = finetune.main(shapes_args(tiny_hf, shapes_manifest, tmp_path, "nan", "--caption", "a {colour} {shape}",
                                     "--epochs", "3", "--lr", "1e-3"))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: training diverged at epoch 2, step 7 (2 of the epoch): the loss is nan (lr ")
    assert "try a lower --lr" in err[0]
    run = tmp_path / "nan"
    assert (run / "checkpoints" / "latest").read_text().strip() == "epoch-0001"
    assert (run / "model").is_dir() and not (run / "export").exists() and not (run / "metrics.json").exists()
    weights = [p for p in run.rglob("*") if p.suffix in (".safetensors", ".npz")]
    assert any(p.parent.name == "model" for p in weights)
    assert sorted(p.name for p in (run / "model").glob("*.safetensors")) == ["model.safetensors"]  # saved in HF layout
    for path in weights:
        if path.suffix == ".npz":  # the "before" embeddings and ranks
            with np.load(path, allow_pickle=True) as data:
                arrays = {k: data[k] for k in data.files if data[k].dtype.kind == "f"}
            assert arrays and all(np.isfinite(a).all() for a in arrays.values()), path
        else:
            for name, array in mx.load(str(path)).items():
                assert bool(mx.all(mx.isfinite(array))), (path, name)


def test_a_run_that_cannot_learn_is_flagged_stuck(tiny_hf, shapes_manifest, tmp_path, capsys):
    # one caption for every image: nothing tells the images apart, the loss stays at ln(batch size)
    records = [json.loads(line) for line in shapes_manifest.read_text().splitlines()]
    for record in records:
        record.update(kind="object", image_path=str(shapes_manifest.parent / record["image_path"]))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    code = finetune.main(shapes_args(tiny_hf, manifest, tmp_path, "stuck", "--caption", "an {kind}",
                                     "--epochs", "2", "--lr", "1e-3", "--label-field", "label"))
    assert code == 0
    out = capsys.readouterr().out
    assert "warning: epoch 2: the training loss after warmup" in out and "stays at chance level" in out
    run = tmp_path / "stuck"
    metrics = json.loads((run / "metrics.json").read_text())
    assert any("epoch 2: the training loss after warmup" in w for w in metrics["warnings"])
    assert "stays at chance level" in (run / "report.html").read_text()
    assert "stays at chance level" in (run / "model" / "README.md").read_text()
