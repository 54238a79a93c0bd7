"""`CLIP` and `SigLIP`: the MLX models with their tokenizer and image preprocessing, ready to embed
and save; `load` reads either (the family comes from config.json, models/family.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Sequence

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from . import weights as W
from .config import CLIPConfig, dtype_key
from ..errors import InputError
from ..io import write_json, write_safetensors
from .family import family_of, read_config
from .fast_ops import on_cpu_streams
from .lora import merged_weights
from .model import CLIPModel, normalize
from .image_open import ImageInput
from .preprocess import ImageProcessor
from .siglip import SiglipConfig, SiglipModel
from .siglip_tokenizer import SiglipTokenizer
from .text_length import end_positions, trim_padding
from .tokenizer import CLIPTokenizer, TokenizerUnreadable

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


def parse_dtype(dtype: str | mx.Dtype | None) -> mx.Dtype | None:
    if dtype is None or isinstance(dtype, mx.Dtype):
        return dtype
    try:
        return DTYPES[dtype_key(dtype)]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r} (choose float32, bfloat16 or float16; or fp32, bf16, fp16)") from None


def dtype_name(dtype: mx.Dtype) -> str:
    """A dtype as users write it: "float32", not "mlx.core.float32"."""
    return str(dtype).split(".")[-1]


class Embedder:
    """What a loaded model adds to its modules (CLIPModel or SiglipModel): tokenizer, preprocessing,
    `embed_images`/`embed_texts` (unit vectors) and `save`."""

    def __init__(self, config: CLIPConfig | SiglipConfig, tokenizer: CLIPTokenizer | SiglipTokenizer | None = None,
                 image_processor: ImageProcessor | None = None):
        super().__init__(config)
        self._tokenizer = tokenizer
        self.image_processor = image_processor or ImageProcessor.from_dict(
            family_of(config).default_preprocessor(config.vision.image_size), config.vision.image_size)
        # inputs=self.state: the compiled functions read the current weights on every call.
        self._embed_image_fn = mx.compile(lambda pixels: normalize(self.encode_image(pixels)), inputs=self.state)
        self._embed_text_fn = mx.compile(lambda ids: normalize(self.encode_text(ids)), inputs=self.state)

    @property
    def tokenizer(self) -> CLIPTokenizer | SiglipTokenizer:
        if self._tokenizer is None:
            raise InputError("this model has no tokenizer files (tokenizer.json, vocab.json + merges.txt, "
                             "or spiece.model)")
        return self._tokenizer

    @property
    def has_tokenizer(self) -> bool:
        """Whether tokenizer files came with the model (`tokenizer` raises when they did not)."""
        return self._tokenizer is not None

    @property
    def dtype(self) -> mx.Dtype:
        return self.text_projection.weight.dtype

    def embed_pixels(self, pixel_values: np.ndarray | mx.array) -> mx.array:
        """Preprocessed (N, H, W, 3) pixels -> L2-normalised embeddings (MLX array).

        On a GPU: one compiled forward pass. On a multi-core CPU the batch is split across one
        MLX stream per core (fast_ops.on_cpu_streams).
        """
        pixels = mx.array(pixel_values).astype(self.dtype)
        split = on_cpu_streams(lambda part: normalize(self.encode_image(part)), pixels)
        return self._embed_image_fn(pixels) if split is None else split

    def embed_tokens(self, input_ids: np.ndarray | mx.array) -> mx.array:
        """Token ids (N, L) -> L2-normalised embeddings (MLX array); CLIP runs only the positions
        up to the batch's last end-of-text token (text_length.py: exact, and a short query costs
        8 positions instead of 77)."""
        if family_of(self).trims_padding and self._tokenizer is not None:
            input_ids = trim_padding(np.asarray(input_ids), self._tokenizer.eos_token_id)
        return self._embed_text_fn(mx.array(input_ids))

    def embed_images(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32) -> np.ndarray:
        """Image paths or PIL images -> (N, projection_dim) float32 unit vectors."""
        if isinstance(images, (str, Path)) or hasattr(images, "mode"):
            images = [images]
        return self._in_batches(list(images), batch_size, lambda b: self.embed_pixels(self.image_processor(b)))

    def embed_texts(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> (N, projection_dim) float32 unit vectors; long texts are truncated.

        CLIP batches the texts shortest first, so each batch runs only as many positions as its
        own longest text (embed_tokens trims), then returns the vectors in the order given."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not (family_of(self).trims_padding and len(texts) > batch_size):
            return self._in_batches(texts, batch_size, lambda b: self.embed_tokens(self.tokenizer(b)))
        ids = self.tokenizer(texts)
        order = np.argsort(end_positions(ids, self.tokenizer.eos_token_id), kind="stable")
        sorted_vectors = self._in_batches(list(order), batch_size, lambda rows: self.embed_tokens(ids[rows]))
        vectors = np.empty_like(sorted_vectors)
        vectors[order] = sorted_vectors
        return vectors

    def _in_batches(self, items: list, batch_size: int, embed) -> np.ndarray:
        """Embed in batches; a progress bar on a terminal when there is more than one batch."""
        from tqdm import tqdm

        out = []
        with tqdm(total=len(items), desc="embedding", leave=False, dynamic_ncols=True,
                  disable=len(items) <= batch_size or not sys.stderr.isatty()) as bar:
            for start in range(0, len(items), batch_size):
                out.append(np.array(embed(items[start:start + batch_size]).astype(mx.float32)))
                bar.update(len(out[-1]))
        return np.concatenate(out) if out else np.zeros((0, self.config.projection_dim), np.float32)

    def set_dtype_all(self, dtype: mx.Dtype) -> None:
        """Cast every parameter (the temperature included) to `dtype`."""
        self.update(tree_unflatten([(k, v.astype(dtype)) for k, v in tree_flatten(self.parameters())]))

    def save(self, path: str | Path) -> Path:
        """Write the MLX folder: config.json, mlx_model.safetensors, tokenizer and preprocessor files."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = dict(self.config.raw)
        config.pop("torch_dtype", None)
        config["dtype"] = config["mlx_clip_dtype"] = dtype_name(self.dtype)
        write_json(folder / "config.json", config)
        write_json(folder / "preprocessor_config.json", self.image_processor.to_dict())
        if self._tokenizer is not None:
            self._tokenizer.save(folder)
        weights = merged_weights(self)  # LoRA adapters folded in: a plain model
        write_safetensors(folder / W.MLX_WEIGHTS, weights, {"format": "mlx"})
        return folder


class CLIP(Embedder, CLIPModel):
    """CLIP in MLX with its tokenizer and preprocessing; `embed_images`/`embed_texts` give unit vectors."""


class SigLIP(Embedder, SiglipModel):
    """SigLIP (or fixed-resolution SigLIP 2) in MLX with its tokenizer and preprocessing."""


def load(path_or_repo: str | Path, dtype: str | mx.Dtype | None = None) -> CLIP | SigLIP:
    """Load a CLIP or SigLIP model from an MLX or HF folder, or a hub repo id (downloaded once, then cached).

    `dtype=None` keeps the dtype the weights are stored in; float32 is the right choice on
    CPUs, bfloat16 or float16 halve memory on Apple GPUs.
    """
    folder = W.resolve_model_folder(path_or_repo)
    config = read_config(folder / "config.json")
    family = family_of(config)
    weights, is_mlx = W.read_weights(folder)
    W.check_layer_counts(config, weights, folder)  # before building: the config decides its size
    if not is_mlx:
        weights = W.hf_to_mlx(weights)
    tokenizer = None
    try:
        tokenizer = family.tokenizer_class.from_folder(folder, config.text.max_position_embeddings)
    except TokenizerUnreadable:
        raise
    except InputError:
        pass  # no tokenizer files: embedding texts then says so
    wrapper = next(cls for cls in (CLIP, SigLIP) if issubclass(cls, family.model_class))
    image_size = config.vision.image_size
    model = wrapper(config, tokenizer, ImageProcessor.from_folder(
        folder, image_size, family.default_preprocessor(image_size)))
    W.check_weights(W.parameter_shapes(model), weights, folder)
    target = parse_dtype(dtype)
    if target is not None:
        weights = {k: v.astype(target) for k, v in weights.items()}
    model.update(tree_unflatten(list(weights.items())))
    mx.eval(model.parameters())
    model.eval()
    return model
