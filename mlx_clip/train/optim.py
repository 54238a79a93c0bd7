"""AdamW with the usual fine-tuning groups and a warmup + cosine learning-rate schedule.

No weight decay on biases (SigLIP's `logit_bias` and `in_proj_bias` included), norms
(layer_norm*, *layrnorm*, *layernorm*), embeddings (class, position and token embeddings) and
the temperature `logit_scale`, as in CLIP and open_clip.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.optimizers as optim

from ..flags import setting

_NO_DECAY = re.compile(r"(^|[._])(bias|logit_scale|class_embedding|probe)$|norm|layrnorm|embedding")


def no_weight_decay(path: str, _array: mx.array | None = None) -> bool:
    """True for parameters that get no weight decay (biases, norms, embeddings, temperature)."""
    return bool(_NO_DECAY.search(path)) and not path.endswith("patch_embedding.weight")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its learning-rate schedule (the steps are known once the split is)."""

    lr: float = setting(1e-5, "peak learning rate (AdamW)")
    warmup: float = setting(0.1, "linear warmup: a fraction of all steps when < 1, else a number of steps; "
                                 "then cosine decay")
    weight_decay: float = setting(0.1, "AdamW weight decay (never on biases, norms, embeddings or the temperature)")
    betas: tuple[float, float] = setting((0.9, 0.98), "AdamW's moment decay rates", cli=False)
    eps: float = setting(1e-6, "AdamW's epsilon", cli=False)
    min_lr_ratio: float = setting(0.0, "where the cosine ends, as a fraction of lr", cli=False)

    def warmup_steps(self, total_steps: int) -> int:
        """`warmup` in steps: a fraction of `total_steps` when < 1, else a step count."""
        return int(round(self.warmup * total_steps)) if self.warmup < 1 else int(self.warmup)


def lr_schedule(config: OptimConfig, total_steps: int):
    """step (0-based, as the optimizer passes it) -> lr: linear warmup to lr, then cosine to min."""
    base, total = config.lr, max(1, total_steps)
    warmup = max(0, config.warmup_steps(total))
    floor = base * config.min_lr_ratio

    def schedule(step: mx.array) -> mx.array:
        step = step.astype(mx.float32)
        warm = base * (step + 1) / max(1, warmup)
        progress = mx.clip((step - warmup) / max(1, total - warmup), 0.0, 1.0)
        cosine = floor + (base - floor) * 0.5 * (1 + mx.cos(math.pi * progress))
        return mx.where(step < warmup, warm, cosine)

    return schedule


class GuardedAdamW(optim.AdamW):
    """mlx's AdamW, arithmetic unchanged, that applies the training step's NaN guard itself.

    While `keep` (a boolean array set by the compiled step, train/step.py) is set, each moment is
    `where(keep, new, old)` before the weight update reads it, and the weight is
    `where(keep, new, old)`: per tensor three single-pass kernels (moment m, moment v, weight)
    instead of five when the guard is applied after the update (the new moments feed both the
    weight update and their own `where`, so MLX's compiler cannot fuse either; measured on the
    49408 x 64 token embedding, bench/overhead_phases.py). where(True, new, old) is `new` bit for
    bit, so the weights and moments are those of optim.AdamW exactly. The arrays it guarded are
    kept in `guarded` (by id), so the step does not guard them twice.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep: mx.array | None = None
        self.guarded: dict[int, mx.array] = {}

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict):
        keep = self.keep
        if keep is None:
            return super().apply_single(gradient, parameter, state)
        # optim.Adam.apply_single's arithmetic, with the guard on each moment and on the result
        lr = self.learning_rate.astype(gradient.dtype)
        b1, b2 = self.betas
        decayed = parameter * (1 - lr * self.weight_decay)
        m = mx.where(keep, b1 * state["m"] + (1 - b1) * gradient, state["m"])
        v = mx.where(keep, b2 * state["v"] + (1 - b2) * mx.square(gradient), state["v"])
        state["m"], state["v"] = m, v
        if self.bias_correction:
            c1 = (lr / (1 - b1**self.step)).astype(gradient.dtype)
            c2 = mx.rsqrt(1 - b2**self.step).astype(gradient.dtype)
            new = decayed - (c1 * m) / (mx.sqrt(v) * c2 + self.eps)
        else:
            new = decayed - lr * m / (mx.sqrt(v) + self.eps)
        new = mx.where(keep, new, parameter)
        self.guarded.update((id(a), a) for a in (m, v, new))
        return new


def make_optimizer(config: OptimConfig, total_steps: int) -> optim.MultiOptimizer:
    """AdamW (decoupled decay, bias-corrected like torch.optim.AdamW) in two parameter groups."""
    schedule = lr_schedule(config, total_steps)
    kwargs = dict(learning_rate=schedule, betas=list(config.betas), eps=config.eps, bias_correction=True)
    return optim.MultiOptimizer(
        [GuardedAdamW(weight_decay=0.0, **kwargs), GuardedAdamW(weight_decay=config.weight_decay, **kwargs)],
        [no_weight_decay],
    )
