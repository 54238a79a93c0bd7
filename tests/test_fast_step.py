"""The training step's CPU fast path computes what the plain form computes: the linear layer
whose weight gradient is row-major."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_clip.models.fast_ops import Linear


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
