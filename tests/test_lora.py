"""LoRA (--lora): a step through the adapters is the step of the explicitly merged weights
W + scale * (A B)^T; only adapters and the temperature train; the saved model is a plain CLIP
with the adapters merged that embeds like the adapted one (float32 and bfloat16); locks decide
where adapters go; a LoRA run learns the synthetic shapes."""

import json
import os
import signal
import subprocess
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

import mlx_clip
from mlx_clip import finetune
from mlx_clip.models.lora import LoraConfig, LoRALinear, merged_weights
from mlx_clip.outputs.export import save_run_model
from mlx_clip.train.epoch import Float32View
from mlx_clip.train.optim import OptimConfig, make_optimizer
from mlx_clip.models.trainable import LockConfig, apply_locks
from mlx_clip.train.step import Trainer, clip_loss
from mlx_clip.wording import millions

CAPTIONS = ["a red circle", "a blue square", "a red circle", "a green triangle", "a yellow star"]
GROUPS = [0, 1, 0, 3, 4]


def batch(model, seed=0):
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(seed).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    return ids, pixels


def adapted(tiny_hf, lora=LoraConfig(rank=4), locks=LockConfig(), nonzero=True):
    """The tiny CLIP with adapters; `nonzero`: B random too (at B = 0 A gets no gradient)."""
    model = mlx_clip.load(tiny_hf)
    apply_locks(model, locks, lora, seed=1)
    if nonzero:
        rng = np.random.default_rng(7)
        model.update(tree_unflatten([(k, mx.array(rng.normal(0, 0.05, v.shape).astype(np.float32)))
                                     for k, v in tree_flatten(model.parameters()) if k.endswith("lora_b")]))
    return model


def adapters(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def test_lora_gradients_and_step_equal_those_of_the_explicitly_merged_weights(tiny_hf):
    model = adapted(tiny_hf, LoraConfig(rank=4, alpha=12.0))
    ids, pixels = batch(model)
    layers = adapters(model)
    assert len(layers) == 2 * 2 * 6 and all(m.scale == 3.0 for m in layers.values())
    trainable = dict(tree_flatten(model.trainable_parameters()))
    assert set(trainable) == {f"{n}.lora_{x}" for n in layers for x in "ab"} | {"logit_scale"}

    # The reference: a plain CLIP whose target weights are W + scale * (A B)^T, differentiated in A, B.
    plain = mlx_clip.load(tiny_hf)
    base = dict(tree_flatten(plain.parameters()))
    args = mx.array(ids), mx.array(pixels), mx.array(GROUPS)

    def merged_loss(params):
        weights = [(f"{n}.weight", base[f"{n}.weight"] + 3.0 * (params[f"{n}.lora_a"] @ params[f"{n}.lora_b"]).T)
                   for n in layers]
        plain.update(tree_unflatten(weights + [("logit_scale", params["logit_scale"])]))
        return clip_loss(plain, *args)

    ref_loss, ref_grads = mx.value_and_grad(merged_loss)(trainable)
    loss, grads = nn.value_and_grad(model, clip_loss)(model, *args)
    grads = dict(tree_flatten(grads))
    assert set(grads) == set(trainable)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    for name in trainable:
        assert float(mx.abs(ref_grads[name]).max()) > 1e-4, name  # a real gradient, not zeros
        np.testing.assert_allclose(np.array(grads[name]), np.array(ref_grads[name]), atol=1e-5, err_msg=name)

    # One optimizer step: the adapters move as AdamW moves them with the reference gradients; W stays.
    # lr 1e-4 as in test_train_step: Adam's first step is ~lr * sign(g), so float noise in a near-zero
    # gradient may move a weight by up to ~lr; at 1e-4 that stays inside the tolerance
    optim = OptimConfig(lr=1e-4, warmup=0, weight_decay=0.1)
    trainer = Trainer(model, make_optimizer(optim, 10))
    trainer.step(ids, pixels, groups=np.array(GROUPS))
    reference = make_optimizer(optim, 10)
    nested = tree_unflatten(list(trainable.items()))
    reference.init(nested)
    expected = dict(tree_flatten(reference.apply_gradients(tree_unflatten(list(ref_grads.items())), nested)))
    after = dict(tree_flatten(model.parameters()))
    for name in trainable:
        np.testing.assert_allclose(np.array(after[name]), np.array(expected[name]), atol=1e-5, err_msg=name)
    for name, value in base.items():
        if name != "logit_scale":  # frozen: bit for bit
            np.testing.assert_array_equal(np.array(after[name]), np.array(value), err_msg=name)


def test_merged_export_is_a_plain_clip_that_embeds_like_the_adapted_model(tiny_hf, tmp_path):
    from transformers import CLIPModel

    model = adapted(tiny_hf)
    ids, pixels = batch(model)
    folder = save_run_model(model, tmp_path / "model")
    saved = mx.load(str(folder / "model.safetensors"))
    assert not [k for k in saved if "lora" in k]
    assert set(saved) == set(mx.load(str(tiny_hf / "model.safetensors")))  # the base model's names exactly
    for loaded in (mlx_clip.load(folder),):
        for a, b in ((model.embed_pixels(pixels), loaded.embed_pixels(pixels)),
                     (model.embed_tokens(ids), loaded.embed_tokens(ids))):
            cosine = np.sum(np.array(a) * np.array(b), axis=1)
            assert cosine.min() >= 0.9999, cosine
    plain = mlx_clip.load(tiny_hf)  # the adapters really change the embeddings (else the test proves nothing)
    assert np.sum(np.array(plain.embed_pixels(pixels)) * np.array(model.embed_pixels(pixels)), axis=1).min() < 0.999

    import torch

    hf = CLIPModel.from_pretrained(folder).eval()
    with torch.no_grad():
        torch_images = hf.get_image_features(pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2))
    torch_images = getattr(torch_images, "pooler_output", torch_images).numpy()
    torch_images /= np.linalg.norm(torch_images, axis=1, keepdims=True)
    assert np.sum(torch_images * np.array(model.embed_pixels(pixels)), axis=1).min() >= 0.9999


def test_bfloat16_master_weights_with_lora_give_the_merged_float32_model(tiny_hf, tmp_path):
    model = adapted(tiny_hf, nonzero=False)
    trainer = Trainer(model, make_optimizer(OptimConfig(lr=1e-2, warmup=0), 10), "bfloat16")
    ids, pixels = batch(model)
    for _ in range(3):
        trainer.step(ids, pixels)
    masters = dict(tree_flatten(trainer.master))
    assert set(masters) == {k for k, _ in tree_flatten(model.trainable_parameters())}
    assert all(v.dtype == mx.float32 for v in masters.values())
    view = Float32View(model, trainer).refresh()  # a plain CLIP: adapters folded into float32 weights
    assert not adapters(view) and view.dtype == mx.float32
    reference = adapted(tiny_hf, nonzero=False)  # float32 adapted model holding the master weights
    reference.update(tree_unflatten(list(tree_flatten(trainer.fp32_parameters()))))
    assert float(mx.abs(reference.vision_model.encoder.layers[0].mlp.fc1.lora_b).max()) > 0  # it trained
    cosine = np.sum(np.array(view.embed_pixels(pixels)) * np.array(reference.embed_pixels(pixels)), axis=1)
    assert cosine.min() >= 0.9999, cosine
    saved = mx.load(str(save_run_model(view, tmp_path / "m") / "model.safetensors"))
    assert not [k for k in saved if "lora" in k]


@pytest.mark.parametrize("locks, vision_blocks, text_blocks", [
    (LockConfig(), [0, 1], [0, 1]),
    (LockConfig(lock_image=True), [], [0, 1]),
    (LockConfig(lock_image=True, unlock_last=1), [1], [0, 1]),
    (LockConfig(lock_image=True, lock_text=True, unlock_last=1), [1], [1]),
])
def test_adapters_go_where_the_locks_leave_training_and_nothing_else_trains(tiny_hf, locks, vision_blocks,
                                                                           text_blocks):
    model = adapted(tiny_hf, LoraConfig(rank=2, targets=["q_proj", "fc2"]), locks, nonzero=False)
    names = set(adapters(model))
    expected = {f"{tower}.encoder.layers.{i}.{part}" for tower, blocks in
                (("vision_model", vision_blocks), ("text_model", text_blocks))
                for i in blocks for part in ("self_attn.q_proj", "mlp.fc2")}
    assert names == expected
    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    assert trainable == {f"{n}.lora_{x}" for n in names for x in "ab"} | {"logit_scale"}


def test_lora_with_both_towers_locked_or_an_unknown_target_is_one_line_before_any_work(tiny_hf, shapes_manifest,
                                                                                        tmp_path, capsys):
    common = ["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path),
              "--no-progress", "--lora", "4"]
    for extra, expected in ((["--lock-image", "--lock-text"], "error: --lora: both towers are locked"),
                            (["--lora-targets", "q_proj,qkv"], "error: --lora-targets: unknown layer 'qkv'")):
        assert finetune.main(common + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(expected), err
    assert not any(tmp_path.iterdir())


def test_a_lora_run_learns_the_shapes_and_saves_a_plain_model(tiny_hf, shapes_manifest, tmp_path, capsys):
    code = finetune.main([
        "--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path), "--name", "lora",
        "--caption", "a {colour} {shape}", "--label-field", "label", "--label-prompt", "a {label}",
        "--val-fraction", "0.25", "--batch-size", "32", "--epochs", "8", "--lr", "1e-2", "--warmup", "0.05",
        "--weight-decay", "0", "--crop-min-area", "0.8", "--no-progress", "--lora", "8", "--grad-checkpoint",
    ])
    assert code == 0
    out = capsys.readouterr().out
    base = mlx_clip.load(tiny_hf)
    total = sum(v.size for _, v in tree_flatten(base.parameters()))
    adapter = 2 * 2 * (4 * 8 * (32 + 32) + 2 * 8 * (32 + 64)) + 1  # 2 towers x 2 blocks, + temperature
    assert f"({millions(total + adapter - 1)} parameters, {millions(adapter)} trained)" in out  # base + adapters
    run = tmp_path / "lora"
    history = json.loads((run / "metrics.json").read_text())["history"]
    chance = 1 / 12
    assert history[0]["zero_shot_acc"] < 0.25
    assert max(h["zero_shot_acc"] for h in history[1:]) >= 3 * chance, history
    assert max(h["mean_R@1"] for h in history[1:]) > history[0]["mean_R@1"] + 0.15
    assert history[-1]["train_loss"] < history[1]["train_loss"]
    final = mlx_clip.load(run / "model")
    assert not adapters(final)
    changed = {k for k, v in merged_weights(final).items()
               if not np.array_equal(np.array(v), np.array(dict(tree_flatten(base.parameters()))[k]))}
    assert "vision_model.encoder.layers.0.mlp.fc1.weight" in changed  # adapters merged into the saved weights
    assert "vision_model.encoder.layers.0.layer_norm1.weight" not in changed  # everything else frozen
    assert "visual_projection.weight" not in changed


def test_a_killed_lora_run_resumes_to_the_uninterrupted_result(tiny_hf, shapes_manifest, tmp_path):
    """Adapters, their AdamW state and the temperature are in the checkpoint: killed in epoch 2 and
    resumed, a LoRA run with checkpointed blocks ends bit for bit like the uninterrupted one."""
    from test_resume import ROOT, assert_same_run

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")  # bitwise reproducible BLAS (test_resume.py)
    args = ["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path),
            "--caption", "a {colour} {shape}", "--caption", "{shape}, {colour}", "--label-field", "label",
            "--batch-size", "24", "--epochs", "3", "--lr", "1e-3", "--rotate", "10", "--no-progress", "--seed", "5",
            "--lora", "4", "--lora-targets", "q_proj,v_proj,fc1", "--grad-checkpoint"]

    def finetune_py(*extra, script=("finetune.py",)):
        return subprocess.run([sys.executable, *script, *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=240)

    full = finetune_py(*args, "--name", "full")
    assert full.returncode == 0, full.stderr
    killed = finetune_py("step:11", *args, "--name", "cut", script=("tests/run_with_kill.py",))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = finetune_py("--runs-dir", str(tmp_path), "--name", "cut", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "from epoch-0001" in resumed.stdout
    assert_same_run(tmp_path / "cut", tmp_path / "full")
    weights = mx.load(str(tmp_path / "cut" / "checkpoints" / "epoch-0003" / "weights.safetensors"))
    assert "vision_model.encoder.layers.1.self_attn.q_proj.lora_b" in weights
    assert float(mx.abs(weights["vision_model.encoder.layers.1.self_attn.q_proj.lora_b"]).max()) > 0
    optimizer = mx.load(str(tmp_path / "cut" / "checkpoints" / "epoch-0003" / "optimizer.safetensors"))
    assert any(k.endswith("q_proj.lora_b.m") for k in optimizer) and not any("fc2" in k for k in optimizer)


def test_dry_run_names_the_setup_and_weighs_its_peak_against_the_ram(tiny_hf, shapes_manifest, tmp_path, capsys):
    from mlx_clip.run.dry_run import memory_line

    assert finetune.main(["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path),
                          "--no-progress", "--batch-size", "16", "--dry-run", "--lora", "4", "--lora-alpha", "2",
                          "--grad-checkpoint"]) == 0
    out = capsys.readouterr().out
    assert "setup: LoRA rank 4 (scale 0.5) on q_proj,k_proj,v_proj,out_proj,fc1,fc2, gradient checkpointing, " \
           "float32, batch 16" in out
    assert "of this machine's" in out and "RAM: fits" in out and "on a Mac (Apple GPU) this needs 8 GB" in out
    assert not any(tmp_path.iterdir())

    gib = 2**30
    tight = memory_line({"max_rss_bytes": 20 * gib, "mlx_peak_bytes": 11 * gib}, ram=24 * gib, gpu_budget=16 * gib)
    assert "= 83% of this machine's 24.00 GiB RAM: does NOT fit comfortably" in tight
    assert "GPU budget here is 16.00 GiB: fits" in tight
    assert "this needs 18 GB of RAM or more" in tight  # 11 GiB > 2/3 of 16 GiB
    assert "this needs 16 GB of RAM" in memory_line({"max_rss_bytes": 11 * gib, "mlx_peak_bytes": 10 * gib},
                                                    ram=16 * gib)
