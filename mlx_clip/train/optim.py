"""AdamW with the usual fine-tuning groups and a warmup + cosine learning-rate schedule.

No weight decay on biases, norms (layer_norm*, *layrnorm*, *layernorm*), embeddings (class,
position and token embeddings) and the temperature `logit_scale`, as in CLIP and open_clip.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.optimizers as optim

_NO_DECAY = re.compile(r"(^|\.)(bias|logit_scale|class_embedding)$|norm|layrnorm|embedding")


def no_weight_decay(path: str, _array: mx.array | None = None) -> bool:
    """True for parameters that get no weight decay (biases, norms, embeddings, temperature)."""
    return bool(_NO_DECAY.search(path)) and not path.endswith("patch_embedding.weight")


@dataclass
class OptimConfig:
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 0
    total_steps: int = 1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    min_lr_ratio: float = 0.0


def lr_schedule(config: OptimConfig):
    """step (0-based, as the optimizer passes it) -> lr: linear warmup to lr, then cosine to min."""
    base, warmup, total = config.lr, max(0, config.warmup_steps), max(1, config.total_steps)
    floor = base * config.min_lr_ratio

    def schedule(step: mx.array) -> mx.array:
        step = step.astype(mx.float32)
        warm = base * (step + 1) / max(1, warmup)
        progress = mx.clip((step - warmup) / max(1, total - warmup), 0.0, 1.0)
        cosine = floor + (base - floor) * 0.5 * (1 + mx.cos(math.pi * progress))
        return mx.where(step < warmup, warm, cosine)

    return schedule


def make_optimizer(config: OptimConfig) -> optim.MultiOptimizer:
    """AdamW (decoupled decay, bias-corrected like torch.optim.AdamW) in two parameter groups."""
    schedule = lr_schedule(config)
    kwargs = dict(learning_rate=schedule, betas=list(config.betas), eps=config.eps, bias_correction=True)
    return optim.MultiOptimizer(
        [optim.AdamW(weight_decay=0.0, **kwargs), optim.AdamW(weight_decay=config.weight_decay, **kwargs)],
        [no_weight_decay],
    )
