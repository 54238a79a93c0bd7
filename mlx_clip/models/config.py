"""CLIP configuration read from a Hugging Face `config.json` (every field the model uses)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_small_text

DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
"""Short names as users write them (accelerate's --mixed_precision bf16, PyTorch's .half())."""


def dtype_key(text: str) -> str:
    """A dtype name or its short form (bf16, fp16, fp32) as its full name (float32, bfloat16,
    float16): what --dtype, --precision, settings files and mlx_clip.load(dtype=...) accept."""
    return DTYPE_ALIASES.get(str(text).lower(), str(text).lower())


# Defaults of transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig.
_TEXT_DEFAULTS = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
    num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=49406, eos_token_id=49407,
)
_VISION_DEFAULTS = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)


def pick_fields(cls, raw: dict[str, Any], defaults: dict[str, Any]):
    """A config dataclass from a config.json section, transformers' defaults for what it leaves out."""
    values = {f.name: raw.get(f.name, defaults.get(f.name)) for f in fields(cls)}
    return cls(**values)


SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "max_position_embeddings", "num_channels", "image_size", "patch_size")


def check_heads(source: str, text: Any, vision: Any) -> None:
    """One line for a size that is not a whole number of at least 1 (zero heads, a negative
    width: a config.json may come from anyone) or a width that does not split into its heads."""
    for name, sub in (("text_config", text), ("vision_config", vision)):
        for size in SIZES:
            value = getattr(sub, size, 1)
            if type(value) is not int or value < 1:
                raise InputError(f"{source}: {name}.{size} is {value!r}; it must be a whole number of at least 1")
        if not isinstance(sub.layer_norm_eps, (int, float)) or not sub.layer_norm_eps > 0:
            raise InputError(f"{source}: {name}.layer_norm_eps is {sub.layer_norm_eps!r}; it must be a number above 0")
        if sub.hidden_size % sub.num_attention_heads:
            raise InputError(f"{source}: {name}.hidden_size {sub.hidden_size} is not divisible by "
                             f"num_attention_heads {sub.num_attention_heads}")


@dataclass
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    hidden_act: str
    layer_norm_eps: float
    pad_token_id: int | None
    bos_token_id: int | None
    eos_token_id: int | None


@dataclass
class VisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_channels: int
    image_size: int
    patch_size: int
    hidden_act: str
    layer_norm_eps: float

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class CLIPConfig:
    text: TextConfig
    vision: VisionConfig
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The config.json as read, written back unchanged (bar dtype) on export."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "CLIPConfig":
        model_type = raw.get("model_type")
        architectures = raw.get("architectures") or []
        if model_type != "clip" and "CLIPModel" not in architectures:
            found = model_type or (architectures[0] if architectures else "no model_type")
            raise InputError(f"{source}: not a CLIP config (model_type is {found!r}, expected 'clip')")
        text = pick_fields(TextConfig, raw.get("text_config") or {}, _TEXT_DEFAULTS)
        vision = pick_fields(VisionConfig, raw.get("vision_config") or {}, _VISION_DEFAULTS)
        check_heads(source, text, vision)
        projection_dim = raw.get("projection_dim", 512)
        if type(projection_dim) is not int or projection_dim < 1:
            raise InputError(f"{source}: projection_dim is {projection_dim!r}; it must be a whole number of at least 1")
        return cls(
            text=text,
            vision=vision,
            projection_dim=projection_dim,
            logit_scale_init_value=raw.get("logit_scale_init_value", 2.6592),
            raw=raw,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "CLIPConfig":
        return cls.from_dict(read_config_json(path), source=str(path))


def read_config_json(path: str | Path) -> dict[str, Any]:
    """A model folder's config.json as a dict; a missing or malformed file is one line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing (a model folder needs a config.json)")
    try:
        raw = json.loads(read_small_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    return raw
