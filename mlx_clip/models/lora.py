"""Low-rank adapters (LoRA): y = W x + b + scale * B A x, with W and b frozen and only A and B
trained, so a ViT-L/14 fine-tune keeps gradients and AdamW moments for a few million adapter
weights instead of 428 million.

`LoRALinear` is an `nn.Linear` (its `weight` and `bias` keep their names, so a checkpoint or a
base model loads into it unchanged) with two extra arrays, `lora_a` (in, rank) and `lora_b`
(rank, out). `lora_b` starts at zero, so an adapted model starts equal to its base, as in
mlx-lm. `merged_weights` folds every adapter into its weight, W + scale * (A B)^T, under the
plain model's names: the export writes that, so every consumer loads a plain model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ..flags import setting
from ..errors import InputError
from .model import Encoder

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
ALL_LOCKED = ("--lora: both towers are locked, so no block can get an adapter; drop --lock-image or --lock-text, "
              "or add --unlock-last N")


def target_list(text: str) -> list[str]:
    """--lora-targets q_proj,v_proj -> ["q_proj", "v_proj"]."""
    return [name.strip() for name in text.split(",") if name.strip()]


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters instead of full fine-tuning (0: off)."""

    rank: int = setting(0, "train low-rank adapters of rank R on the unlocked layers instead of their weights "
                           "(base weights frozen; the temperature, and SigLIP's bias, still train); the saved "
                           "model has them merged. 0: full fine-tuning", flag="--lora", metavar="R")
    alpha: float | None = setting(None, "adapter scale = alpha / rank (default alpha = 2 x rank: scale 2)",
                                  flag="--lora-alpha", metavar="ALPHA")
    targets: list[str] = setting(default_factory=lambda: list(DEFAULT_TARGETS),
                                 help="comma-separated names of the linear layers inside each transformer block "
                                      "that get adapters", flag="--lora-targets", type=target_list,
                                 metavar="NAMES")

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else 2.0 * self.rank) / max(1, self.rank)

    def check(self) -> None:
        """One line for a setting that cannot work (before any long work)."""
        if self.rank < 0:
            raise InputError(f"--lora must be a rank >= 1 (or 0 for full fine-tuning), got {self.rank}")
        if self.rank and not self.targets:
            raise InputError("--lora-targets names no layer")
        unknown = [t for t in self.targets if t not in DEFAULT_TARGETS]
        if self.rank and unknown:
            raise InputError(f"--lora-targets: unknown layer {unknown[0]!r} (known: {', '.join(DEFAULT_TARGETS)})")


class LoRALinear(nn.Linear):
    """A linear layer plus a low-rank update: x W^T + b + scale (x A) B."""

    def __init__(self, input_dims: int, output_dims: int, rank: int, scale: float, bias: bool = True,
                 key: mx.array | None = None):
        super().__init__(input_dims, output_dims, bias=bias)
        self.scale = scale  # a float attribute: not a parameter
        bound = 1 / math.sqrt(input_dims)  # A as nn.Linear initialises weights; B zero (mlx-lm, PEFT)
        self.lora_a = mx.random.uniform(-bound, bound, (input_dims, rank), key=key)
        self.lora_b = mx.zeros((rank, output_dims))

    @classmethod
    def wrap(cls, linear: nn.Linear, rank: int, scale: float, key: mx.array | None = None) -> "LoRALinear":
        """`linear` with an adapter; its weight and bias arrays are shared, not copied."""
        output_dims, input_dims = linear.weight.shape
        lora = cls(input_dims, output_dims, rank, scale, bias="bias" in linear, key=key)
        lora.update({k: v for k, v in linear.parameters().items() if k in ("weight", "bias")})
        return lora

    def __call__(self, x: mx.array) -> mx.array:
        return super().__call__(x) + self.scale * ((x @ self.lora_a) @ self.lora_b)

    def delta(self, lora_a: mx.array | None = None, lora_b: mx.array | None = None) -> mx.array:
        """scale * (A B)^T, shaped as the weight (out, in)."""
        a = self.lora_a if lora_a is None else lora_a
        b = self.lora_b if lora_b is None else lora_b
        return self.scale * (a.astype(mx.float32) @ b.astype(mx.float32)).T


def add_adapters(model: nn.Module, config: LoraConfig, seed: int = 0) -> int:
    """Put adapters into the target layers of every transformer block that has trainable weights now
    (so locks decide where they go), then freeze everything but the adapters (train/step.py's
    apply_locks then unfreezes the family's scalars: the temperature, SigLIP's bias).
    Returns how many blocks got adapters (0: every block was locked; nothing was changed)."""
    blocks = [layer for encoder in model.modules() if isinstance(encoder, Encoder) for layer in encoder.layers
              if tree_flatten(layer.trainable_parameters())]
    if not blocks:
        return 0
    key = mx.random.key(seed)
    model.freeze()
    for block in blocks:
        wrapped = []
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear) and name.rpartition(".")[2] in config.targets:
                # an adapter already there (curve.py trains again from the start) is replaced by a fresh one
                key, sub = mx.random.split(key)
                adapter = LoRALinear.wrap(module, config.rank, config.scale, sub)
                adapter.freeze(keys=["weight", "bias"], strict=False)
                wrapped.append((name, adapter))
        block.update_modules(tree_unflatten(wrapped))
    return len(blocks)


def merged_weights(model: nn.Module, flat: dict[str, mx.array] | None = None) -> dict[str, mx.array]:
    """The model's weights by flat name with every adapter folded in (W + scale (A B)^T) and the
    adapter arrays left out: the weights of the plain model. `flat`: take the arrays from there
    (e.g. bfloat16 training's float32 master weights) instead of from the model."""
    flat = dict(tree_flatten(model.parameters())) if flat is None else dict(flat)
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            a, b = flat.pop(f"{name}.lora_a"), flat.pop(f"{name}.lora_b")
            weight = flat[f"{name}.weight"]
            flat[f"{name}.weight"] = (weight.astype(mx.float32) + module.delta(a, b)).astype(weight.dtype)
    return flat
