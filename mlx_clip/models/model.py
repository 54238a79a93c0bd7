"""CLIP in MLX: a vision transformer and a text transformer with projections, plain modules.

Module and parameter names follow transformers' `CLIPModel`, so weight names map one to
one; only the patch embedding's layout differs (MLX stores (out, kh, kw, in); weights.py
converts). The CPU fast paths (libm-free activations and attention) live in fast_ops.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .config import CLIPConfig, TextConfig, VisionConfig
from .fast_ops import Linear, attention, gelu_tanh, quick_gelu


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": nn.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported hidden_act {name!r} (known: {', '.join(ACTIVATIONS)})") from None


class Attention(nn.Module):
    def __init__(self, dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dims // num_heads) ** -0.5
        self.q_proj = Linear(dims, dims)
        self.k_proj = Linear(dims, dims)
        self.v_proj = Linear(dims, dims)
        self.out_proj = Linear(dims, dims)

    def __call__(self, x: mx.array, mask: str | None = None) -> mx.array:
        batch, length, dims = x.shape

        def heads(t: mx.array) -> mx.array:
            return t.reshape(batch, length, self.num_heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = attention(q, k, v, self.scale, mask)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(batch, length, dims))


class MLP(nn.Module):
    def __init__(self, dims: int, hidden: int, act: str):
        super().__init__()
        self.activation_fn = activation(act)
        self.fc1 = Linear(dims, hidden)
        self.fc2 = Linear(hidden, dims)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.activation_fn(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-norm transformer block, as in CLIP."""

    def __init__(self, config: TextConfig | VisionConfig):
        super().__init__()
        dims = config.hidden_size
        self.self_attn = Attention(dims, config.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(dims, eps=config.layer_norm_eps)
        self.mlp = MLP(dims, config.intermediate_size, config.hidden_act)
        self.layer_norm2 = nn.LayerNorm(dims, eps=config.layer_norm_eps)

    def __call__(self, x: mx.array, mask: str | None = None) -> mx.array:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    """The stack of blocks. `grad_checkpoint` (set_grad_checkpoint) recomputes each block in the
    backward pass instead of keeping its activations: a training step then holds each block's
    input plus one block's activations, at the cost of a second forward pass of every block."""

    def __init__(self, config: TextConfig | VisionConfig):
        super().__init__()
        self.layers = [EncoderLayer(config) for _ in range(config.num_hidden_layers)]
        self.grad_checkpoint = False  # a plain attribute: not a parameter, never saved

    def __call__(self, x: mx.array, mask: str | None = None) -> mx.array:
        for layer in self.layers:
            x = checkpointed(layer, x, mask) if self.grad_checkpoint else layer(x, mask)
        return x


def checkpointed(layer: nn.Module, x: mx.array, mask: str | None) -> mx.array:
    """`layer(x, mask)` under mx.checkpoint. The layer's trainable parameters are passed in as
    inputs (as mlx-lm does), so their gradients flow through the recomputation; frozen ones are
    constants."""

    def block(params: dict, x: mx.array) -> mx.array:
        layer.update(params)
        return layer(x, mask)

    return mx.checkpoint(block)(layer.trainable_parameters(), x)


def set_grad_checkpoint(model: nn.Module, enabled: bool = True) -> int:
    """Switch gradient checkpointing on every Encoder in `model` (any model built from Encoder);
    returns how many encoders it set."""
    encoders = [m for m in model.modules() if isinstance(m, Encoder)]
    for encoder in encoders:
        encoder.grad_checkpoint = enabled
    return len(encoders)


class TextEmbeddings(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def __call__(self, input_ids: mx.array) -> mx.array:
        length = input_ids.shape[1]
        return self.token_embedding(input_ids) + self.position_embedding.weight[:length]


class TextTransformer(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.embeddings = TextEmbeddings(config)
        self.encoder = Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def end_of_text_positions(self, input_ids: mx.array) -> mx.array:
        """Where each sequence's end-of-text token is (transformers' rule, both variants)."""
        eos = self.config.eos_token_id
        if eos is None or eos == 2:  # legacy configs: end-of-text is the largest id
            return mx.argmax(input_ids, axis=-1)
        return mx.argmax((input_ids == eos).astype(mx.int32), axis=-1)

    def __call__(self, input_ids: mx.array) -> mx.array:
        """Pooled (end-of-text) hidden state, shape (N, hidden_size)."""
        x = self.embeddings(input_ids)
        x = self.encoder(x, mask="causal")
        x = self.final_layer_norm(x)
        positions = self.end_of_text_positions(input_ids)
        return mx.take_along_axis(x, positions[:, None, None], axis=1)[:, 0]


class PatchEmbedding(nn.Module):
    """The patch convolution (kernel = stride = patch size, no bias) as one matmul over patches.

    The weight keeps MLX's convolution layout (out, kh, kw, in) and transformers' name, so
    weights load as for nn.Conv2d; the matmul is cheaper than MLX's convolution path.
    """

    def __init__(self, channels: int, dims: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.weight = mx.zeros((dims, patch_size, patch_size, channels))

    def __call__(self, pixel_values: mx.array) -> mx.array:
        """(N, H, W, C) -> (N, patches, dims), patches in row-major order."""
        n, h, w, c = pixel_values.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        patches = pixel_values.reshape(n, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(n, gh * gw, p * p * c)
        return patches @ self.weight.reshape(self.weight.shape[0], -1).T


class VisionEmbeddings(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        dims = config.hidden_size
        self.class_embedding = mx.zeros((dims,))
        self.patch_embedding = PatchEmbedding(config.num_channels, dims, config.patch_size)
        self.position_embedding = nn.Embedding(config.num_patches + 1, dims)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        """pixel_values: (N, H, W, C) -> (N, 1 + patches, hidden_size)."""
        x = self.patch_embedding(pixel_values)
        cls = mx.broadcast_to(self.class_embedding.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        x = mx.concatenate([cls, x], axis=1)
        return x + self.position_embedding.weight


class VisionTransformer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = VisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        """Pooled (class token) hidden state, shape (N, hidden_size)."""
        size = self.config.image_size
        if pixel_values.shape[1:3] != (size, size):
            raise ValueError(
                f"images must be {size}x{size} (NHWC), got {tuple(pixel_values.shape)}"
            )
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        x = self.encoder(x)
        return self.post_layernorm(x[:, 0])


@dataclass
class CLIPModelOutput:
    """What `CLIPModel.__call__` returns, named as transformers' CLIPOutput."""

    logits_per_image: mx.array  # (images, texts), scaled by the temperature
    logits_per_text: mx.array  # its transpose
    image_embeds: mx.array  # L2-normalised
    text_embeds: mx.array  # L2-normalised


class CLIPModel(nn.Module):
    """The MLX modules and parameters of CLIP (no tokenizer or preprocessing)."""

    model_type = "clip"  # the key of models/family.py's registry

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.text_model = TextTransformer(config.text)
        self.vision_model = VisionTransformer(config.vision)
        self.visual_projection = nn.Linear(config.vision.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = mx.array(config.logit_scale_init_value)

    def encode_image(self, pixel_values: mx.array) -> mx.array:
        """Projected image features (not normalised), shape (N, projection_dim)."""
        return self.visual_projection(self.vision_model(pixel_values))

    def encode_text(self, input_ids: mx.array) -> mx.array:
        """Projected text features (not normalised), shape (N, projection_dim)."""
        return self.text_projection(self.text_model(input_ids))

    def similarity(self, text_embeds: mx.array, image_embeds: mx.array) -> mx.array:
        """logits_per_text from normalised embeddings: cosine scaled by the temperature."""
        return (text_embeds @ image_embeds.T) * mx.exp(self.logit_scale)

    def __call__(self, input_ids: mx.array, pixel_values: mx.array) -> CLIPModelOutput:
        """Normalised embeddings and logits, as transformers' CLIPModel.forward."""
        image_embeds = normalize(self.encode_image(pixel_values))
        text_embeds = normalize(self.encode_text(input_ids))
        logits_per_text = self.similarity(text_embeds, image_embeds)
        return CLIPModelOutput(logits_per_text.T, logits_per_text, image_embeds, text_embeds)


def normalize(x: mx.array) -> mx.array:
    """L2-normalise along the last axis."""
    return x / mx.linalg.norm(x, axis=-1, keepdims=True)
