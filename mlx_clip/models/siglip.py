"""SigLIP (and fixed-resolution SigLIP 2) in MLX: plain modules named as transformers' `SiglipModel`.

What differs from CLIP (models/model.py), checked against transformers' modeling_siglip.py: the
patch convolution has a bias, there is no class token and no pre-norm, the image is pooled by a
multi-head attention "probe" head; the text tower attends in both directions (no causal mask,
no attention mask: texts are padded to max_length as in training) and is pooled at the LAST
position, then projected by `text_model.head`; logits = cos * exp(logit_scale) + logit_bias.
The transformer blocks are CLIP's (model.Encoder), so whatever Encoder learns SigLIP gets too.
Tensor names equal transformers'; only the patch kernel's layout differs (weights.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..errors import InputError
from .config import TextConfig, VisionConfig, check_heads, pick_fields
from .fast_ops import attention
from .model import MLP, CLIPModelOutput, Encoder, PatchEmbedding, TextEmbeddings, normalize

# Defaults of transformers' SiglipTextConfig / SiglipVisionConfig.
_TEXT_DEFAULTS = dict(
    vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6, pad_token_id=1, bos_token_id=49406, eos_token_id=49407, projection_size=None,
)
_VISION_DEFAULTS = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
    vision_use_head=True,
)


@dataclass
class SiglipTextConfig(TextConfig):
    projection_size: int | None = None  # text_model.head's output; None: hidden_size


@dataclass
class SiglipVisionConfig(VisionConfig):
    vision_use_head: bool = True


@dataclass
class SiglipConfig:
    """A SigLIP config.json (model_type "siglip"); `raw` is written back unchanged (bar dtype)."""

    text: SiglipTextConfig
    vision: SiglipVisionConfig
    raw: dict[str, Any]

    @property
    def projection_dim(self) -> int:
        """The embedding size: the image head keeps the vision width, the text head maps onto it."""
        return self.vision.hidden_size

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "SiglipConfig":
        text = pick_fields(SiglipTextConfig, raw.get("text_config") or {}, _TEXT_DEFAULTS)
        vision = pick_fields(SiglipVisionConfig, raw.get("vision_config") or {}, _VISION_DEFAULTS)
        if text.projection_size is None:
            text.projection_size = text.hidden_size
        check_heads(source, text, vision)
        if not vision.vision_use_head:
            raise InputError(f"{source}: vision_config.vision_use_head is false: a SigLIP without its pooling "
                             "head gives no image embedding")
        if text.projection_size != vision.hidden_size:
            raise InputError(f"{source}: text_config.projection_size {text.projection_size} differs from "
                             f"vision_config.hidden_size {vision.hidden_size}: the two embeddings cannot be compared")
        return cls(text=text, vision=vision, raw=raw)


class TextTransformer(nn.Module):
    def __init__(self, config: SiglipTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = TextEmbeddings(config)  # the same token + position embeddings as CLIP's
        self.encoder = Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.projection_size)

    def __call__(self, input_ids: mx.array) -> mx.array:
        """Projected text features (not normalised): the last position through `head`."""
        x = self.encoder(self.embeddings(input_ids))
        return self.head(self.final_layer_norm(x)[:, -1])


class BiasedPatchEmbedding(PatchEmbedding):
    """CLIP's patch matmul plus the bias SigLIP's convolution has. Pixels past the last whole patch
    are dropped, as the strided "valid" convolution drops them (so400m-patch14-384: 27 x 14 = 378)."""

    def __init__(self, channels: int, dims: int, patch_size: int):
        super().__init__(channels, dims, patch_size)
        self.bias = mx.zeros((dims,))

    def __call__(self, pixel_values: mx.array) -> mx.array:
        p = self.patch_size
        height, width = pixel_values.shape[1] // p * p, pixel_values.shape[2] // p * p
        return super().__call__(pixel_values[:, :height, :width]) + self.bias


class VisionEmbeddings(nn.Module):
    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.patch_embedding = BiasedPatchEmbedding(config.num_channels, config.hidden_size, config.patch_size)
        self.position_embedding = nn.Embedding(config.num_patches, config.hidden_size)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        return self.patch_embedding(pixel_values) + self.position_embedding.weight


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention's math and tensor names (in_proj_weight holds q, k, v stacked)."""

    def __init__(self, dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = mx.zeros((3 * dims, dims))
        self.in_proj_bias = mx.zeros((3 * dims,))
        self.out_proj = nn.Linear(dims, dims)

    def __call__(self, query: mx.array, keys: mx.array) -> mx.array:
        dims = query.shape[-1]
        w, b = self.in_proj_weight, self.in_proj_bias
        q = query @ w[:dims].T + b[:dims]
        k = keys @ w[dims:2 * dims].T + b[dims:2 * dims]
        v = keys @ w[2 * dims:].T + b[2 * dims:]

        def heads(t: mx.array) -> mx.array:
            return t.reshape(t.shape[0], t.shape[1], self.num_heads, -1).transpose(0, 2, 1, 3)

        scale = (dims // self.num_heads) ** -0.5
        out = attention(heads(q), heads(k), heads(v), scale)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(query.shape[0], query.shape[1], dims))


class AttentionPoolingHead(nn.Module):
    """A learned probe attends over all patches; its result (plus an MLP) is the image feature."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.probe = mx.zeros((1, 1, config.hidden_size))
        self.attention = MultiheadAttention(config.hidden_size, config.num_attention_heads)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def __call__(self, x: mx.array) -> mx.array:
        probe = mx.broadcast_to(self.probe.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        pooled = self.attention(probe, x)
        return (pooled + self.mlp(self.layernorm(pooled)))[:, 0]


class VisionTransformer(nn.Module):
    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = VisionEmbeddings(config)
        self.encoder = Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = AttentionPoolingHead(config)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        """Pooled image features (not normalised), shape (N, hidden_size)."""
        size = self.config.image_size
        if pixel_values.shape[1:3] != (size, size):
            raise ValueError(f"images must be {size}x{size} (NHWC), got {tuple(pixel_values.shape)}")
        return self.head(self.post_layernorm(self.encoder(self.embeddings(pixel_values))))


class SiglipModel(nn.Module):
    """The MLX modules and parameters of SigLIP (no tokenizer or preprocessing).

    `visual_projection` / `text_projection` name each tower's head, so tower locks treat them
    as CLIP's projections (a property is no parameter: the weights keep transformers' names).
    """

    model_type = "siglip"

    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.config = config
        self.text_model = TextTransformer(config.text)
        self.vision_model = VisionTransformer(config.vision)
        self.logit_scale = mx.zeros((1,))
        self.logit_bias = mx.zeros((1,))

    @property
    def visual_projection(self) -> nn.Module:
        return self.vision_model.head

    @property
    def text_projection(self) -> nn.Module:
        return self.text_model.head

    def encode_image(self, pixel_values: mx.array) -> mx.array:
        return self.vision_model(pixel_values)

    def encode_text(self, input_ids: mx.array) -> mx.array:
        return self.text_model(input_ids)

    def similarity(self, text_embeds: mx.array, image_embeds: mx.array) -> mx.array:
        """logits_per_text from normalised embeddings: scaled cosine plus the learned bias."""
        return (text_embeds @ image_embeds.T) * mx.exp(self.logit_scale) + self.logit_bias

    def __call__(self, input_ids: mx.array, pixel_values: mx.array) -> CLIPModelOutput:
        image_embeds = normalize(self.encode_image(pixel_values))
        text_embeds = normalize(self.encode_text(input_ids))
        logits_per_text = self.similarity(text_embeds, image_embeds)
        return CLIPModelOutput(logits_per_text.T, logits_per_text, image_embeds, text_embeds)
