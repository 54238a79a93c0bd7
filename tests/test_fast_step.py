"""The training step's CPU fast paths compute what the plain forms compute: the linear layer
whose weight gradient is row-major, and custom backward passes on their forward's stream."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_clip.models.fast_ops import Linear, backward_on_forward_stream


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
