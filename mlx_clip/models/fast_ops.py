"""CPU fast paths, kept apart from the model code: libm-free activations and attention softmax, a
linear layer whose weight gradient comes out in the weight's own layout, and per-core streams.

Each one computes what the plain MLX expression computes (to float32 rounding) and exists
only because MLX's CPU backend is slow at the plain form; tests/test_model.py pins each
against its plain form.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .._blas import single_threaded_blas

_LOG2E = 1.4426950408889634
_ROUND = 12582912.0  # 1.5 * 2**23: adding then subtracting it rounds a float32 to an integer
# 2**f on [-0.5, 0.5] (Taylor coefficients of exp(f ln 2)); relative error below 2e-7.
_EXP2_COEFFICIENTS = (1.5403530393381606e-4, 1.3333558146428443e-3, 9.6181291076284772e-3,
                      5.5504108664821580e-2, 2.4022650695910071e-1, 6.9314718055994531e-1, 1.0)
MAX_STREAMS = 8


def _exp2(t: mx.array) -> mx.array:
    """2**t from multiplies, adds and an exponent-bit shift: no libm calls.

    MLX's CPU kernels evaluate `exp` one element at a time through libm's `fmaf`; this form
    compiles to plain arithmetic instead, which made ViT-B/32 training 16% faster on an x86
    CPU (see bench/README.md). Exact to float32 rounding for the sigmoid's use.
    """
    t = mx.clip(t, -125.0, 126.0)  # -125, not -126: p * 2**-126 with p < 1 would be subnormal, 20x slower
    k = (t + _ROUND) - _ROUND
    f = t - k
    p = _EXP2_COEFFICIENTS[0]
    for c in _EXP2_COEFFICIENTS[1:]:
        p = p * f + c
    return p * ((k.astype(mx.int32) + 127) << 23).view(mx.float32)


def _sigmoid(z: mx.array) -> mx.array:
    if z.dtype != mx.float32:  # the bit trick is float32's; half precision is for GPUs anyway
        return mx.sigmoid(z)
    return 1.0 / (1.0 + _exp2(z * -_LOG2E))


@mx.custom_function
def quick_gelu(x: mx.array) -> mx.array:
    """x * sigmoid(1.702 x) (CLIP's activation), within 1e-6 of the exact sigmoid in float32."""
    return x * _sigmoid(1.702 * x)


@quick_gelu.vjp
def _quick_gelu_vjp(x: mx.array, cotangent: mx.array, _output: mx.array) -> mx.array:
    # written out so the backward pass reuses the libm-free sigmoid too
    s = _sigmoid(1.702 * x)
    return cotangent * (s + 1.702 * x * s * (1.0 - s))


@mx.custom_function
def affine(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """x @ weight.T + bias, with the weight's gradient row-major (see Linear)."""
    return mx.addmm(bias, x, weight.T)


@affine.vjp
def _affine_vjp(primals: tuple, cotangent: mx.array, _output: mx.array) -> tuple:
    x, weight, _bias = primals
    rows = cotangent.reshape(-1, cotangent.shape[-1])
    # (out, rows) @ (rows, in): the weight's gradient row-major like the weight, so the
    # optimizer's fused update reads every operand contiguously
    weight_grad = rows.T @ x.reshape(-1, x.shape[-1])
    return cotangent @ weight, weight_grad, rows.sum(axis=0)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same output) whose weight gradient is row-major.

    MLX differentiates `x @ weight.T` into a transposed view of `x.T @ grad`, so every
    weight gradient came out column-major and AdamW's fused update over (gradient, moments,
    weight) ran MLX's strided kernel: 6.4 % of a ViT-B/32 training step on one core
    (perf; bench/README.md). Computing `grad.T @ x` instead gives the same numbers in the
    weight's layout at the same GEMM cost.
    """

    def __call__(self, x: mx.array) -> mx.array:
        if "bias" not in self:
            return super().__call__(x)
        return affine(x, self.weight, self.bias)


@mx.custom_function
def _masked_softmax(scores: mx.array, keep: mx.array) -> mx.array:
    """softmax over the last axis where `keep`, exactly 0 elsewhere (float32, libm-free exp)."""
    e = mx.where(keep, _exp2((scores - scores.max(axis=-1, keepdims=True)) * _LOG2E), 0.0)
    return e / e.sum(axis=-1, keepdims=True)


@_masked_softmax.vjp
def _masked_softmax_vjp(primals: tuple, cotangent: mx.array, probs: mx.array) -> tuple:
    # written out: the softmax's own gradient, no exp recomputed and no graph through _exp2
    return probs * (cotangent - (cotangent * probs).sum(axis=-1, keepdims=True)), mx.zeros_like(primals[1])


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: str | None = None) -> mx.array:
    """mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask) for (N, heads, L, D)
    inputs and mask None or "causal".

    On the CPU in float32 it is two matmuls around a libm-free softmax: MLX's CPU attention
    computes its softmax through libm's exp, one element at a time, and took 5.3 ms of a 6.8 ms
    forward at batch 32, 40 tokens, width 64 (fast path 2.3 ms; forward + backward 7.9 -> 4.3 ms).
    Elsewhere (a GPU, half precision) MLX's fused kernel.
    """
    if mx.default_device() != mx.cpu or q.dtype != mx.float32:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    scores = (q * scale) @ k.swapaxes(-1, -2)
    length, keys = scores.shape[-2:]
    if mask == "causal":
        keep = mx.arange(keys)[None, :] <= mx.arange(length)[:, None] + (keys - length)
    elif mask is None:
        keep = mx.array(True)
    else:
        raise ValueError(f"attention takes mask None or 'causal', got {mask!r}")
    return _masked_softmax(scores, keep) @ v


def gelu_tanh(x: mx.array) -> mx.array:
    """GELU's tanh approximation (transformers' gelu_new / gelu_pytorch_tanh)."""
    return 0.5 * x * (1.0 + mx.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def cpu_streams() -> tuple:
    """One MLX CPU stream per usable core (none on a GPU or a single core)."""
    return _streams_per_core() if mx.default_device() == mx.cpu else ()


_THREAD = threading.local()


def _streams_per_core() -> tuple:
    """Made once per thread: an MLX stream exists only in the thread that made it, and a search
    server's request threads or a caller's worker threads embed too."""
    streams = getattr(_THREAD, "streams", None)
    if streams is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        streams = _THREAD.streams = (tuple(mx.new_stream(mx.cpu) for _ in range(min(cores, MAX_STREAMS)))
                                     if cores > 1 else ())
    return streams


def batch_streams(batch_size: int) -> tuple:
    """The CPU streams a batch of this size is split across: one per core, or none where that
    does not pay (a GPU, one core, under two rows per stream)."""
    streams = cpu_streams()
    return streams if len(streams) >= 2 and batch_size >= 2 * len(streams) else ()


def per_stream(fn: Callable[[mx.array], mx.array], x: mx.array, streams: tuple) -> mx.array:
    """fn(x) as one slice of the batch per stream, concatenated (lazy)."""
    bounds = np.linspace(0, x.shape[0], len(streams) + 1).astype(int)
    parts = []
    for stream, start, stop in zip(streams, bounds[:-1], bounds[1:]):
        with mx.stream(stream):
            parts.append(fn(x[start:stop]))
    return mx.concatenate(parts)


def on_cpu_streams(fn: Callable[[mx.array], mx.array], x: mx.array) -> mx.array | None:
    """fn(x) as one slice of the batch per CPU stream, each with single-threaded BLAS (evaluated);
    None where that does not pay (a GPU, one core, a batch under two rows per stream).

    MLX runs a stream's non-matmul work (activations, norms, softmax) on one thread, so this
    keeps every core busy: it took ViT-B/32 embedding from 23 to 33 images/s on 2 cores
    (bench/README.md).
    """
    streams = batch_streams(x.shape[0])
    if not streams:
        return None
    with single_threaded_blas():
        out = per_stream(fn, x, streams)
        mx.eval(out)
    return out
