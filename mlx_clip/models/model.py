"""CLIP in MLX: a vision transformer and a text transformer with projections.

Module and parameter names follow transformers' `CLIPModel`, so weight names map one to
one; only the patch embedding's layout differs (MLX stores (out, kh, kw, in)).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from .config import CLIPConfig, TextConfig, VisionConfig


_LOG2E = 1.4426950408889634
_ROUND = 12582912.0  # 1.5 * 2**23: adding then subtracting it rounds a float32 to an integer
# 2**f on [-0.5, 0.5] (Taylor coefficients of exp(f ln 2)); relative error below 2e-7.
_EXP2_COEFFICIENTS = (1.5403530393381606e-4, 1.3333558146428443e-3, 9.6181291076284772e-3,
                      5.5504108664821580e-2, 2.4022650695910071e-1, 6.9314718055994531e-1, 1.0)


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
def _quick_gelu(x: mx.array) -> mx.array:
    """x * sigmoid(1.702 x) (CLIP's activation), within 1e-6 of the exact sigmoid in float32."""
    return x * _sigmoid(1.702 * x)


@_quick_gelu.vjp
def _quick_gelu_vjp(x: mx.array, cotangent: mx.array, _output: mx.array) -> mx.array:
    s = _sigmoid(1.702 * x)
    return cotangent * (s + 1.702 * x * s * (1.0 - s))


def _gelu_tanh(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + mx.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {
    "quick_gelu": _quick_gelu,
    "gelu": nn.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
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
        self.q_proj = nn.Linear(dims, dims)
        self.k_proj = nn.Linear(dims, dims)
        self.v_proj = nn.Linear(dims, dims)
        self.out_proj = nn.Linear(dims, dims)

    def __call__(self, x: mx.array, mask: str | mx.array | None = None) -> mx.array:
        batch, length, dims = x.shape

        def heads(t: mx.array) -> mx.array:
            return t.reshape(batch, length, self.num_heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(batch, length, dims))


class MLP(nn.Module):
    def __init__(self, dims: int, hidden: int, act: str):
        super().__init__()
        self.activation_fn = activation(act)
        self.fc1 = nn.Linear(dims, hidden)
        self.fc2 = nn.Linear(hidden, dims)

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

    def __call__(self, x: mx.array, mask: str | mx.array | None = None) -> mx.array:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, config: TextConfig | VisionConfig):
        super().__init__()
        self.layers = [EncoderLayer(config) for _ in range(config.num_hidden_layers)]

    def __call__(self, x: mx.array, mask: str | mx.array | None = None) -> mx.array:
        for layer in self.layers:
            x = layer(x, mask)
        return x


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


class VisionEmbeddings(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.patch_size = config.patch_size
        dims = config.hidden_size
        self.class_embedding = mx.zeros((dims,))
        # (out, kh, kw, in): MLX's convolution layout, used here as a matmul over patches.
        self.patch_embedding = {
            "weight": mx.zeros((dims, config.patch_size, config.patch_size, config.num_channels))
        }
        self.position_embedding = nn.Embedding(config.num_patches + 1, dims)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        """pixel_values: (N, H, W, C) -> (N, 1 + patches, hidden_size)."""
        n, h, w, c = pixel_values.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        # Non-overlapping patches as one matmul: cheaper than the convolution path.
        patches = pixel_values.reshape(n, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(n, gh * gw, p * p * c)
        weight = self.patch_embedding["weight"]
        x = patches @ weight.reshape(weight.shape[0], -1).T
        cls = mx.broadcast_to(self.class_embedding.astype(x.dtype), (n, 1, x.shape[-1]))
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


class CLIPModel(nn.Module):
    """The MLX modules and parameters of CLIP (no tokenizer or preprocessing)."""

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

    def __call__(self, input_ids: mx.array, pixel_values: mx.array):
        """Normalised embeddings and logits, as transformers' CLIPModel.forward.

        Returns (logits_per_image, logits_per_text, image_embeds, text_embeds).
        """
        image_embeds = normalize(self.encode_image(pixel_values))
        text_embeds = normalize(self.encode_text(input_ids))
        logits_per_text = (text_embeds @ image_embeds.T) * mx.exp(self.logit_scale)
        return logits_per_text.T, logits_per_text, image_embeds, text_embeds


def normalize(x: mx.array) -> mx.array:
    """L2-normalise along the last axis."""
    return x / mx.linalg.norm(x, axis=-1, keepdims=True)
