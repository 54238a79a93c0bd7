"""Evaluation image preprocessing equal to transformers' CLIPImageProcessor and SiglipImageProcessor
(PIL backends), as the folder's preprocessor_config.json says.

CLIP: resize the shortest side (bicubic), centre-crop. SigLIP (`size` is {height, width}):
resize to exactly that size with the file's resampling, no crop. Then rescale to [0, 1] and
normalise with the folder's mean and std. Any mode (RGBA and LA on white, P, L, CMYK, 16-bit) becomes RGB, and
EXIF orientation is applied first. Output is channels-last (N, H, W, 3) float32, MLX's layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageInput = Union[str, Path, Image.Image]


def has_alpha(image: Image.Image) -> bool:
    """Whether the picture has transparency (an alpha band, or a palette/colour key marked transparent)."""
    return "A" in image.getbands() or image.info.get("transparency") is not None


def shown_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as shown: swapped when the EXIF orientation turns the picture sideways."""
    sideways = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    return (image.height, image.width) if sideways else image.size


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: transparency composited on white, 16-bit scaled, EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(image: ImageInput) -> Image.Image:
    """Open a path (or take a PIL image) and return it as RGB; unreadable files raise InputError."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    path = Path(image)
    try:
        with Image.open(path) as opened:
            opened.load()
            return to_rgb(opened)
    except FileNotFoundError:
        raise InputError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path}: unreadable image ({err})") from None


def _edge(value: Any, key: str, default: int) -> int:
    if isinstance(value, dict):
        return int(value.get(key) or value.get("height") or default)
    return int(value) if value is not None else default


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
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), image_size)
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
            image = image.resize(size, resample=self.resample, box=(0, 0, width / scale, height / scale))
        if self.do_center_crop:
            width, height = image.size
            top = (height - self.crop_height) // 2
            left = (width - self.crop_width) // 2
            # PIL pads with black where the crop leaves the image, as transformers pads with 0.
            image = image.crop((left, top, left + self.crop_width, top + self.crop_height))
        return image

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
