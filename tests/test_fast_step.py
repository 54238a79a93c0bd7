"""The training step's CPU fast paths compute what the plain forms compute: the linear layer
whose weight gradient is row-major, and the step whose towers run one batch slice per core."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_clip
from mlx_clip.models.fast_ops import Linear, backward_on_forward_stream, batch_streams, cpu_streams
from mlx_clip.train.loss import contrastive_loss
from mlx_clip.train.step import clip_loss


def _square_sum(layer, x):
    return (layer(x) ** 2).sum()


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 8)])
def test_linear_matches_nn_linear_and_its_weight_gradient_is_row_major(shape):
    mx.random.seed(0)
    fast, plain = Linear(8, 6), nn.Linear(8, 6)
    plain.update(fast.parameters())
    x = mx.random.normal(shape)
    np.testing.assert_array_equal(np.array(fast(x)), np.array(plain(x)))
    (_, fast_grads), (_, plain_grads) = (nn.value_and_grad(m, _square_sum)(m, x) for m in (fast, plain))
    for name in ("weight", "bias"):
        np.testing.assert_allclose(np.array(fast_grads[name]), np.array(plain_grads[name]), rtol=1e-5, atol=1e-5)
    x_grads = [mx.grad(lambda x, m=m: _square_sum(m, x))(x) for m in (fast, plain)]
    np.testing.assert_allclose(np.array(x_grads[0]), np.array(x_grads[1]), rtol=1e-5, atol=1e-5)
    # the point of it: the weight gradient comes in the weight's own (row-major) layout, so the
    # optimizer's fused update runs contiguously (nn.Linear's is a transposed view)
    mx.eval(fast_grads, plain_grads)
    assert memoryview(fast_grads["weight"]).c_contiguous
    assert not memoryview(plain_grads["weight"]).c_contiguous


def test_linear_without_bias_is_nn_linear():
    layer = Linear(4, 3, bias=False)
    x = mx.random.normal((2, 4))
    np.testing.assert_array_equal(np.array(layer(x)), np.array(x @ layer.weight.T))


@pytest.mark.skipif(len(cpu_streams()) < 2, reason="needs a CPU with two or more cores")
def test_loss_split_across_core_streams_equals_the_whole_batch(tiny_hf):
    model = mlx_clip.load(tiny_hf)
    captions = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a cat", "a dog", "x"]
    ids = mx.array(model.tokenizer(captions))
    pixels = mx.array(np.random.default_rng(0).standard_normal((len(captions), 32, 32, 3)).astype(np.float32))
    groups = mx.array([0, 1, 0, 3, 4, 5, 6])
    assert batch_streams(len(captions))  # this batch is split

    def whole(model, ids, pixels, groups):
        return contrastive_loss(model(ids, pixels).logits_per_image, groups)

    split_loss, split_grads = nn.value_and_grad(model, clip_loss)(model, ids, pixels, groups)
    whole_loss, whole_grads = nn.value_and_grad(model, whole)(model, ids, pixels, groups)
    assert abs(split_loss.item() - whole_loss.item()) < 1e-6
    whole_flat = dict(tree_flatten(whole_grads))
    for name, grad in tree_flatten(split_grads):
        np.testing.assert_allclose(np.array(grad), np.array(whole_flat[name]), rtol=1e-4, atol=1e-6, err_msg=name)
    assert not batch_streams(len(cpu_streams()) * 2 - 1)  # too few rows per stream: not split


@pytest.mark.skipif(len(cpu_streams()) < 2, reason="needs a CPU with two or more cores")
def test_adamw_spread_over_core_streams_equals_adamw():
    from mlx_clip.train.optim import StreamedAdamW

    rng = np.random.default_rng(0)
    shapes = {"a": (64, 32), "b": (32,), "c": (16, 16), "d": (128,), "e": (8, 3)}
    params = {k: mx.array(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}
    kwargs = dict(learning_rate=1e-2, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.1, bias_correction=True)
    spread, plain = StreamedAdamW(**kwargs), optim.AdamW(**kwargs)
    ours, ref = dict(params), dict(params)
    for step in range(3):
        grads = {k: mx.array(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}
        ours, ref = spread.apply_gradients(grads, ours), plain.apply_gradients(grads, ref)
        mx.eval(ours, ref)
    for k in shapes:
        np.testing.assert_allclose(np.array(ours[k]), np.array(ref[k]), rtol=1e-6, atol=1e-7, err_msg=k)
        assert not np.allclose(np.array(ours[k]), np.array(params[k]))
    assert sorted(spread.stream_load) != [0] * len(spread.stream_load) and min(spread.stream_load) > 0  # all used


def test_custom_backward_runs_on_the_stream_its_forward_ran_on():
    """MLX builds a custom VJP on the default stream; the helper moves it to the forward's stream, so
    the split step's backward passes (Linear, quick_gelu) stay on their own cores' streams."""
    seen = []

    def backward(x, cotangent, output):
        seen.append(str(mx.default_stream(mx.default_device())))
        return cotangent * 3

    triple = backward_on_forward_stream(lambda x: x * 3, backward)
    stream = mx.new_stream(mx.default_device())

    def loss(x):
        with mx.stream(stream):
            y = triple(x)
        return y.sum()

    grad = mx.grad(loss)(mx.ones(3))
    np.testing.assert_array_equal(np.array(grad), [3, 3, 3])
    assert seen == [str(stream)] and str(stream) != str(mx.default_stream(mx.default_device()))
    mx.grad(lambda x: triple(x).sum())(mx.ones(2))  # no stream given: the default one
    assert seen[-1] == str(mx.default_stream(mx.default_device()))
