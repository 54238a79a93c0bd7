"""--grad-checkpoint: recomputing each transformer block in the backward pass gives the same
gradients (full fine-tuning and LoRA) with a clearly lower measured peak of MLX memory, in the
plain and in the compiled (Trainer) step."""

import gc

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_clip.models.config import CLIPConfig
from mlx_clip.models.lora import LoraConfig
from mlx_clip.models.model import CLIPModel, Encoder, set_grad_checkpoint
from mlx_clip.train.optim import OptimConfig, make_optimizer
from mlx_clip.models.trainable import LockConfig, apply_locks
from mlx_clip.train.step import Trainer, clip_loss

# Activations dominate: 8 vision blocks over 65 tokens of width 128 for 32 images, ~0.4M weights each.
CONFIG = {"model_type": "clip", "projection_dim": 64,
          "vision_config": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4,
                                image_size=64, patch_size=8),
          "text_config": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                              vocab_size=1000, max_position_embeddings=16, eos_token_id=999)}
BATCH = 32


def model_and_batch(checkpoint: bool, lora: int = 0):
    mx.random.seed(0)
    model = CLIPModel(CLIPConfig.from_dict(CONFIG))
    apply_locks(model, LockConfig(), LoraConfig(rank=lora) if lora else None, seed=0)
    if lora:  # B random too, so A gets a gradient
        model.update({"vision_model": {"encoder": {"layers": [
            {"mlp": {"fc1": {"lora_b": mx.random.normal(layer.mlp.fc1.lora_b.shape, key=mx.random.key(i))}}}
            for i, layer in enumerate(model.vision_model.encoder.layers)]}}})
    mx.eval(model.parameters())
    assert set_grad_checkpoint(model, checkpoint) == 2  # both towers' encoders
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 998, (BATCH, 16))
    ids[:, 10] = 999  # end of text
    pixels = rng.standard_normal((BATCH, 64, 64, 3)).astype(np.float32)
    return model, mx.array(ids), mx.array(pixels), mx.arange(BATCH)


def step_peak(run) -> int:
    """The peak of MLX memory while `run()` evaluates, above what was allocated before it (the weights,
    the batch, and whatever arrays other tests in this process still hold)."""
    gc.collect()
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    run()
    return mx.get_peak_memory() - before


def gradients_and_peak(checkpoint: bool, lora: int = 0):
    model, *args = model_and_batch(checkpoint, lora)
    out = {}

    def run():
        out["loss"], out["grads"] = nn.value_and_grad(model, clip_loss)(model, *args)
        mx.eval(out["loss"], out["grads"])

    peak = step_peak(run)
    return float(out["loss"]), dict(tree_flatten(out["grads"])), peak


@pytest.mark.parametrize("lora", [0, 4])
def test_checkpointed_blocks_give_the_same_gradients_with_less_memory(lora):
    loss, grads, peak = gradients_and_peak(False, lora)
    loss_ckpt, grads_ckpt, peak_ckpt = gradients_and_peak(True, lora)
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == grads_ckpt.keys()
    assert any("vision_model.encoder.layers.0." in k for k in grads)  # gradients reach the first block
    for name in grads:
        np.testing.assert_allclose(np.array(grads_ckpt[name]), np.array(grads[name]), atol=1e-5, rtol=1e-5,
                                   err_msg=name)
    assert peak_ckpt < 0.7 * peak, (peak_ckpt / 2**20, peak / 2**20)


def test_checkpointing_lowers_the_peak_of_the_compiled_training_step():
    peaks, weights = [], []
    for checkpoint in (False, True):
        model, ids, pixels, _ = model_and_batch(checkpoint)
        trainer = Trainer(model, make_optimizer(OptimConfig(lr=1e-4, warmup=0), 10))
        trainer.step(np.array(ids), np.array(pixels))  # compiles (and allocates the optimizer state)
        peaks.append(step_peak(lambda: trainer.step(np.array(ids), np.array(pixels))))
        weights.append(dict(tree_flatten(model.parameters())))
    assert peaks[1] < 0.75 * peaks[0], [p / 2**20 for p in peaks]
    for name, value in weights[0].items():
        np.testing.assert_allclose(np.array(weights[1][name]), np.array(value), atol=1e-5, err_msg=name)


def test_every_encoder_is_switched_and_off_means_the_plain_loop():
    model = CLIPModel(CLIPConfig.from_dict(CONFIG))
    encoders = [m for m in model.modules() if isinstance(m, Encoder)]
    assert not any(e.grad_checkpoint for e in encoders)
    set_grad_checkpoint(model)
    assert all(e.grad_checkpoint for e in encoders)
    assert "grad_checkpoint" not in dict(tree_flatten(model.parameters()))  # not a weight: never saved
