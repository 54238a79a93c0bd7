"""--wise-ft with --lora: the exported model/ is (1 - a) base + a fine-tuned, where "fine-tuned"
is the best epoch's checkpoint with its adapters merged by hand here (W + scale (A B)^T, not by the
package's own merge); a = 0 exports the base model and a = 1 the fine-tuned one; the trade-off
plot, the report's section and the console's list of written files follow."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_clip
from mlx_clip import finetune

RANK, SCALE = 4, 2.0  # --lora 4 with the default alpha (2 x rank): scale 2


def flat(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def merged_by_hand(checkpoint: dict[str, mx.array]) -> dict[str, np.ndarray]:
    """The checkpoint's plain weights with each adapter folded into its layer's weight."""
    weights = {k: np.array(v) for k, v in checkpoint.items() if not k.endswith((".lora_a", ".lora_b"))}
    for name in [k[: -len(".lora_a")] for k in checkpoint if k.endswith(".lora_a")]:
        a, b = np.array(checkpoint[f"{name}.lora_a"]), np.array(checkpoint[f"{name}.lora_b"])
        weights[f"{name}.weight"] = weights[f"{name}.weight"] + SCALE * (a @ b).T
    return weights


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_a_lora_run_exports_the_mix_of_base_and_merged_fine_tuned_weights(alpha, tiny_hf, shapes_manifest,
                                                                          tmp_path, capsys):
    code = finetune.main([
        "--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path), "--name", "w",
        "--caption", "a {colour} {shape}", "--label-field", "label", "--test-fraction", "0.25",
        "--batch-size", "32", "--epochs", "2", "--lr", "1e-2", "--lora", str(RANK), "--retention-images", "20",
        "--wise-ft", f"{alpha:g}", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    run = tmp_path / "w"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["wise_ft"]["alpha"] == alpha and [p["alpha"] for p in metrics["wise_ft"]["points"]] == [alpha]
    checkpoint = run / "checkpoints" / f"epoch-{metrics['best_epoch']:04d}" / "weights.safetensors"
    stored = mx.load(str(checkpoint))
    assert any(k.endswith(".lora_b") for k in stored)  # the run trained adapters, not the weights
    tuned = merged_by_hand(stored)
    base = flat(mlx_clip.load(tiny_hf, dtype="float32"))
    saved = flat(mlx_clip.load(run / "model", dtype="float32"))
    assert set(saved) == set(base) == set(tuned)  # a plain model: no adapter arrays left
    moved = [k for k in base if not np.allclose(tuned[k], base[k], atol=1e-4)]
    assert "vision_model.encoder.layers.0.mlp.fc1.weight" in moved and "logit_scale" in moved  # it trained
    for name in base:
        expected = (1 - alpha) * base[name] + alpha * tuned[name]
        np.testing.assert_allclose(saved[name], expected, atol=1e-5, err_msg=name)
    if alpha == 0.0:
        assert all(np.array_equal(saved[k], base[k]) for k in base)  # exactly the base model
    assert (run / "wise_ft.png").stat().st_size > 10_000
    assert f"WiSE-FT: the kept mix a = {alpha:g}" in (run / "report.html").read_text()
    assert f"a = {alpha:g}" in (run / "model" / "README.md").read_text()
    from mlx_clip.outputs.label_prompt import recorded_label_prompt  # what search.py --curate asks it with

    assert recorded_label_prompt(run / "model") == ("a photo of {label}", str(run / "model" / "README.md"))
    assert f"kept a = {alpha:g}" in out
    assert "wise_ft.png" in next(line for line in out.splitlines() if line.startswith(f"wrote {run}"))
