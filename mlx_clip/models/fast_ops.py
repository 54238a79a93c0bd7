"""CPU fast paths, kept apart from the model code: libm-free activations and per-core streams.

Each one computes what the plain MLX expression computes (to float32 rounding) and exists
only because MLX's CPU backend is slow at the plain form; tests/test_model.py pins each
against its plain form.
"""

from __future__ import annotations

import math
import os
from functools import cache
from typing import Callable

import mlx.core as mx
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
    t = mx.clip(t, -126.0, 126.0)
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


def gelu_tanh(x: mx.array) -> mx.array:
    """GELU's tanh approximation (transformers' gelu_new / gelu_pytorch_tanh)."""
    return 0.5 * x * (1.0 + mx.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def cpu_streams() -> tuple:
    """One MLX CPU stream per usable core (none on a GPU or a single core)."""
    return _streams_per_core() if mx.default_device() == mx.cpu else ()


@cache
def _streams_per_core() -> tuple:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return tuple(mx.new_stream(mx.cpu) for _ in range(min(cores, MAX_STREAMS))) if cores > 1 else ()


def on_cpu_streams(fn: Callable[[mx.array], mx.array], x: mx.array) -> mx.array | None:
    """fn(x) as one slice of the batch per CPU stream, each with single-threaded BLAS (evaluated);
    None where that does not pay (a GPU, one core, a batch under two rows per stream).

    MLX runs a stream's non-matmul work (activations, norms, softmax) on one thread, so this
    keeps every core busy: it took ViT-B/32 embedding from 23 to 33 images/s on 2 cores
    (bench/README.md).
    """
    streams = cpu_streams()
    if len(streams) < 2 or x.shape[0] < 2 * len(streams):
        return None
    bounds = np.linspace(0, x.shape[0], len(streams) + 1).astype(int)
    with single_threaded_blas():
        parts = []
        for stream, start, stop in zip(streams, bounds[:-1], bounds[1:]):
            with mx.stream(stream):
                parts.append(fn(x[start:stop]))
        out = mx.concatenate(parts)
        mx.eval(out)
    return out
