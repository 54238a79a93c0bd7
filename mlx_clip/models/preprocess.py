"""Evaluation image preprocessing equal to transformers' CLIPImageProcessor and SiglipImageProcessor
(PIL backends), as the folder's preprocessor_config.json says.

CLIP: resize the shortest side (bicubic), centre-crop. SigLIP (`size` is {height, width}):
resize to exactly that size with the file's resampling, no crop. Then rescale to [0, 1] and
normalise with the folder's mean and std. Any mode (RGBA and LA on white, P, L, CMYK, 16-bit) becomes RGB, and
EXIF orientation is applied first. Output is channels-last (N, H, W, 3) float32, MLX's layout.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io import read_small_text
from .image_open import ImageInput, load_image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

def _edge(value: Any, key: str, default: int) -> int:
    if isinstance(value, dict):
        return int(value.get(key) or value.get("height") or default)
    return int(value) if value is not None else default


# Pictures whose shortest-side resize is more than this many times the crop's area (longer than
# 64:1 for a square crop) resize only the region the centre crop keeps: a 1 x 100,000 PNG would
# otherwise become a 224 x 22,400,000 picture (15 GB) to keep 224 x 224 of it. Up to 64:1 the
# whole resize (at most 3.2 M pixels, 10 MB) is done, so the pixels are exactly
# CLIPImageProcessor's (the parity test, 7.6:1 included).
CROP_FIRST_AREA = 64


@dataclass
class ImageProcessor:
    """The settings of a `preprocessor_config.json`, applied with PIL and NumPy."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    resample: int = 3  # PIL bicubic
    resize_to: tuple[int, int] | None = None  # (height, width): resize to exactly this (SigLIP), no aspect kept
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], image_size: int = 224) -> "ImageProcessor":
        size = raw.get("size", image_size)
        if isinstance(size, dict) and "shortest_edge" not in size and "height" in size and "width" in size:
            height, width = int(size["height"]), int(size["width"])
            return cls(
                shortest_edge=min(height, width), crop_height=height, crop_width=width,
                do_resize=raw.get("do_resize", True), do_center_crop=False,
                do_rescale=raw.get("do_rescale", True), rescale_factor=raw.get("rescale_factor", 1 / 255),
                do_normalize=raw.get("do_normalize", True),
                image_mean=tuple(raw.get("image_mean") or OPENAI_CLIP_MEAN),
                image_std=tuple(raw.get("image_std") or OPENAI_CLIP_STD),
                resample=int(raw.get("resample", 3)), resize_to=(height, width), raw=raw,
            )
        crop = raw.get("crop_size", image_size)
        return cls(
            shortest_edge=_edge(size, "shortest_edge", image_size),
            crop_height=_edge(crop, "height", image_size),
            crop_width=int(crop.get("width", crop.get("height", image_size))) if isinstance(crop, dict) else _edge(crop, "width", image_size),
            do_resize=raw.get("do_resize", True),
            do_center_crop=raw.get("do_center_crop", True),
            do_rescale=raw.get("do_rescale", True),
            rescale_factor=raw.get("rescale_factor", 1 / 255),
            do_normalize=raw.get("do_normalize", True),
            image_mean=tuple(raw.get("image_mean") or OPENAI_CLIP_MEAN),
            image_std=tuple(raw.get("image_std") or OPENAI_CLIP_STD),
            resample=int(raw.get("resample", 3)),
            raw=raw,
        )

    @classmethod
    def from_folder(cls, folder: str | Path, image_size: int = 224,
                    defaults: dict[str, Any] | None = None) -> "ImageProcessor":
        """The folder's preprocessor_config.json, else `defaults` (the model family's)."""
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            return cls.from_dict(defaults or {}, image_size)
        try:
            return cls.from_dict(json.loads(read_small_text(path)), image_size)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err})") from None

    def to_dict(self) -> dict[str, Any]:
        """A preprocessor_config.json that transformers' CLIPImageProcessor (SiglipImageProcessor) reads."""
        out = dict(self.raw)
        if self.resize_to is not None:
            out.update(
                image_processor_type=out.get("image_processor_type", "SiglipImageProcessor"),
                size={"height": self.resize_to[0], "width": self.resize_to[1]},
                do_resize=self.do_resize, do_rescale=self.do_rescale, rescale_factor=self.rescale_factor,
                do_normalize=self.do_normalize, image_mean=list(self.image_mean),
                image_std=list(self.image_std), resample=self.resample,
            )
            return out
        out.update(
            image_processor_type=out.get("image_processor_type", "CLIPImageProcessor"),
            size={"shortest_edge": self.shortest_edge},
            crop_size={"height": self.crop_height, "width": self.crop_width},
            do_resize=self.do_resize, do_center_crop=self.do_center_crop,
            do_rescale=self.do_rescale, rescale_factor=self.rescale_factor,
            do_normalize=self.do_normalize, image_mean=list(self.image_mean),
            image_std=list(self.image_std), resample=self.resample, do_convert_rgb=True,
        )
        return out

    def resize_and_crop(self, image: Image.Image, full_size: tuple[int, int] | None = None,
                        scale: int = 1) -> Image.Image:
        """Shortest side to `shortest_edge` (transformers' rounding), then centre crop; or, with
        `resize_to`, exactly that size.

        `image` may be a picture of `full_size` decoded at 1/`scale` (JPEG draft, `Image.reduce`,
        sizes rounded up): the output size and the resampled extent are then those of the full
        picture, so only the resampling's input differs from a full-size decode."""
        if self.do_resize and self.resize_to is not None:
            width, height = full_size or image.size
            size = (self.resize_to[1], self.resize_to[0])
            image = image.resize(size, resample=self.resample, box=(0, 0, width / scale, height / scale))
        elif self.do_resize:
            width, height = full_size or image.size
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            size = (new_short, new_long) if width <= height else (new_long, new_short)
            if self.do_center_crop and size[0] * size[1] > CROP_FIRST_AREA * self.crop_width * self.crop_height:
                return self._resized_crop(image, (width, height), size, scale)
            image = image.resize(size, resample=self.resample, box=(0, 0, width / scale, height / scale))
        if self.do_center_crop:
            width, height = image.size
            top = (height - self.crop_height) // 2
            left = (width - self.crop_width) // 2
            # PIL pads with black where the crop leaves the image, as transformers pads with 0.
            image = image.crop((left, top, left + self.crop_width, top + self.crop_height))
        return image

    def _resized_crop(self, image: Image.Image, full: tuple[int, int], size: tuple[int, int],
                      scale: int) -> Image.Image:
        """The centre crop of the resize of `image` to `size`, computing only the kept pixels, in
        PIL's order for the full resize (rows first, then columns: the order decides how the 8-bit
        intermediate clips). PIL maps output pixel i to source (i + 0.5) * in / out and clamps its
        filter to the picture either way, so only float rounding of the boxes differs: at most one
        grey level on a few pixels (tests/test_image_budget.py)."""
        (width, height), (new_w, new_h) = full, size
        top = (new_h - self.crop_height) // 2
        left = (new_w - self.crop_width) // 2
        x0, y0 = max(0, left), max(0, top)
        x1, y1 = min(new_w, left + self.crop_width), min(new_h, top + self.crop_height)
        sx, sy = width / new_w / scale, height / new_h / scale
        # Only the source rows the vertical filter reaches (support <= 3 taps, scaled when shrinking).
        reach = 3 * max(1.0, sy) + 2
        first = max(0, math.floor(y0 * sy - reach))
        last = min(image.height, math.ceil(y1 * sy + reach))
        rows = image.crop((0, first, image.width, last))
        rows = rows.resize((x1 - x0, rows.height), resample=self.resample, box=(x0 * sx, 0, x1 * sx, rows.height))
        kept = rows.resize((x1 - x0, y1 - y0), resample=self.resample,
                           box=(0, y0 * sy - first, x1 - x0, y1 * sy - first))
        if (x0, y0, x1, y1) == (left, top, left + self.crop_width, top + self.crop_height):
            return kept
        # PIL pads with black where the crop leaves the image, as transformers pads with 0.
        out = Image.new(kept.mode, (self.crop_width, self.crop_height))
        out.paste(kept, (x0 - left, y0 - top))
        return out

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (..., H, W, 3) -> float32, rescaled and normalised."""
        out = pixels.astype(np.float32)
        if self.do_rescale:
            out *= np.float32(self.rescale_factor)
        if self.do_normalize:
            out = (out - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return out

    def __call__(self, images: ImageInput | Iterable[ImageInput]) -> np.ndarray:
        """Paths or PIL images -> (N, H, W, 3) float32 pixel values."""
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        arrays = [np.asarray(self.resize_and_crop(load_image(image))) for image in images]
        return self.normalize(np.stack(arrays))
