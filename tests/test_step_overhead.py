"""The overhead cut in the training step changes no result: AdamW that guards its own update
(optim.GuardedAdamW) trains bit for bit as mlx's AdamW guarded after the update."""

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from test_step_pipeline import batches, snapshot

import mlx_clip
from mlx_clip.train.optim import GuardedAdamW, OptimConfig, lr_schedule, make_optimizer, no_weight_decay
from mlx_clip.train.step import Trainer

CONFIG = OptimConfig(lr=1e-3, warmup=1, weight_decay=0.1)


def plain_adamw() -> optim.MultiOptimizer:
    """make_optimizer's groups and schedule with mlx's own AdamW (the step guards it afterwards)."""
    kwargs = dict(learning_rate=lr_schedule(CONFIG, 10), betas=list(CONFIG.betas), eps=CONFIG.eps,
                  bias_correction=True)
    return optim.MultiOptimizer([optim.AdamW(weight_decay=0.0, **kwargs),
                                 optim.AdamW(weight_decay=CONFIG.weight_decay, **kwargs)], [no_weight_decay])


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_guarded_adamw_trains_bit_for_bit_as_mlx_adamw(tiny_hf, precision):
    guarded = Trainer(mlx_clip.load(tiny_hf), make_optimizer(CONFIG, total_steps=10), precision)
    plain = Trainer(mlx_clip.load(tiny_hf), plain_adamw(), precision)
    assert all(isinstance(o, GuardedAdamW) for o in guarded.optimizer.optimizers)
    for ids, pixels in batches(guarded.model, 3):
        assert float(guarded.step(ids, pixels)) == float(plain.step(ids, pixels))
    assert_same(snapshot(guarded), snapshot(plain))


def test_guarded_adamw_outside_a_step_is_mlx_adamw():
    """Without the step's flag (e.g. used on its own) it is optim.AdamW unchanged."""
    weights, grads = {"w": mx.array([1.0, -2.0, 3.0])}, {"w": mx.array([0.5, 0.25, -1.0])}
    ours, theirs = GuardedAdamW(learning_rate=0.1, weight_decay=0.1), optim.AdamW(learning_rate=0.1, weight_decay=0.1)
    a, b = ours.apply_gradients(grads, weights), theirs.apply_gradients(grads, weights)
    assert np.array_equal(np.array(a["w"]), np.array(b["w"]))

