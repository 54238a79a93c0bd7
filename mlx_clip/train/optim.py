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


@dataclass
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


def make_optimizer(config: OptimConfig, total_steps: int) -> optim.MultiOptimizer:
    """AdamW (decoupled decay, bias-corrected like torch.optim.AdamW) in two parameter groups."""
    schedule = lr_schedule(config, total_steps)
    kwargs = dict(learning_rate=schedule, betas=list(config.betas), eps=config.eps, bias_correction=True)
    return optim.MultiOptimizer(
        [optim.AdamW(weight_decay=0.0, **kwargs), optim.AdamW(weight_decay=config.weight_decay, **kwargs)],
        [no_weight_decay],
    )
