"""Opening pictures from anyone with bounded memory: the one pixel budget, checked from the
header before a pixel is decoded, and reduced decoding (JPEG DCT scaling, then a box `reduce`).

A picture's file size says nothing about what it costs to decode: a 559 KB PNG of 12,000 x
12,000 pixels decodes to 432 MB of RGB and peaked at 1.8 GB RSS before this check (eight at once:
12 GB). Every reader of images (fetch's downloads and local copies, the training and evaluation
streams, `embed_images`, the llm plugin, the collection index) opens them here, so one budget
holds everywhere.

Why 100 megapixels (MAX_PIXELS): it admits every real catalogue photo and most scans (an
8000 x 6000 camera file is 48 MP, an A3 page at 600 dpi 70 MP, Pillow's own warning starts at
89.5 MP) while one decode stays at ~300 MB of RGB (400 MB with alpha). Larger scans are refused in
one line that says to downscale them.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..io import NotARegularFile, open_regular

__all__ = ["MAX_PIXELS", "ImageTooLarge", "Decoded", "check_pixels", "open_image_bounded", "decode_reduced",
           "load_image", "to_rgb", "has_alpha", "shown_size", "ImageInput"]

MAX_PIXELS = 100_000_000

ImageInput = Union[str, Path, Image.Image]
ImageSource = Union[str, Path, bytes, Image.Image]


class ImageTooLarge(InputError):
    """A picture whose header claims more pixels than the budget; nothing was decoded."""


HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")  # ISO-BMFF major brands


def _register_heif() -> bool:
    """iPhones save photos as HEIC, which Pillow reads once pillow-heif is installed (the optional
    `.[heic]` extra; not a default: its wheels bundle libheif's codecs under their own licences)."""
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
    except Exception:  # noqa: BLE001  (absent, or a broken install: the package still opens every other format)
        return False
    return True


HEIF_READABLE = _register_heif()


HEIF_HINT = ("a HEIC/HEIF picture (an iPhone photo?), which Pillow reads with pillow-heif: pip install pillow-heif "
             "(or export it as JPEG)")


def unreadable_heif(head: bytes) -> bool:
    """Whether a file Pillow could not identify starts as a HEIC/HEIF picture (and pillow-heif is missing)."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS and not HEIF_READABLE


def unreadable_text(source: "ImageSource") -> str:
    """Why Pillow could not identify `source`: a HEIC/HEIF header without pillow-heif says what to do."""
    try:
        if isinstance(source, bytes):
            head = source[:12]
        else:
            with open_regular(Path(source)) as handle:
                head = handle.read(12)
    except OSError:
        head = b""
    return HEIF_HINT if unreadable_heif(head) else "unreadable image (not an image format Pillow can read)"


def has_alpha(image: Image.Image) -> bool:
    """Whether the picture has transparency (an alpha band, or a palette/colour key marked transparent)."""
    return "A" in image.getbands() or image.info.get("transparency") is not None


def shown_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as shown: swapped when the EXIF orientation turns the picture sideways."""
    sideways = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    return (image.height, image.width) if sideways else image.size


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: transparency composited on white, 16-bit scaled, EXIF orientation applied.
    An upright RGB picture is returned as it is: each copy of a 100-megapixel decode is 300 MB."""
    if image.getexif().get(0x0112, 1) != 1:
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
    return image if image.mode == "RGB" else image.convert("RGB")


def check_pixels(width: int, height: int, where: str, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ImageTooLarge (one line naming `where`) when width x height is over `max_pixels`."""
    if max_pixels and width * height > max_pixels:
        raise ImageTooLarge(f"{where}: {width:,} x {height:,} pixels is over the pixel budget of "
                            f"{max_pixels / 1e6:g} megapixels; downscale the picture first")


@dataclass
class Decoded:
    """An RGB picture of `full_size` (after EXIF orientation) decoded at 1/`scale` of it."""

    image: Image.Image
    full_size: tuple[int, int]
    scale: int


def _describe(source: ImageSource) -> str:
    if isinstance(source, bytes):
        return f"the image ({len(source):,} bytes)"
    return str(source) if not isinstance(source, Image.Image) else "the image"


def open_image_bounded(source: ImageSource, max_pixels: int = MAX_PIXELS, min_side: int = 0) -> Decoded:
    """Open a path, bytes or PIL image as RGB (EXIF applied, alpha on white), refusing more than
    `max_pixels` from the header before decoding. With `min_side`, decode at the smallest integer
    scale whose shortest side stays >= min_side: JPEGs by DCT scaling (draft), then a box `reduce`.

    Raises ImageTooLarge, or InputError for a missing or unreadable file (one line each)."""
    where = _describe(source)
    try:
        if isinstance(source, Image.Image):
            check_pixels(*source.size, where, max_pixels)
            rgb, full, scale = to_rgb(source), shown_size(source), 1
        else:
            handle = io.BytesIO(source) if isinstance(source, bytes) else open_regular(Path(source))
            with handle, Image.open(handle) as image:
                check_pixels(*image.size, where, max_pixels)
                full, scale = shown_size(image), 1
                if image.format == "JPEG" and min_side:
                    shrink = min_side / max(1, min(full))
                    drafted = image.draft("RGB", (max(1, math.ceil(image.width * shrink)),
                                                  max(1, math.ceil(image.height * shrink))))
                    if drafted:  # (mode, (0, 0, width / scale, height / scale)) of the raw picture
                        scale = round(max(full) / max(drafted[1][2:]))
                image.load()
                rgb = to_rgb(image)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{where}: image file not found") from None
    except (NotARegularFile, IsADirectoryError) as err:
        raise InputError(f"{where}: {err.strerror}, not an image file") from None
    except UnidentifiedImageError:
        raise InputError(f"{where}: {unreadable_text(source)}") from None
    except Image.DecompressionBombError:  # Pillow refuses such a header itself, before ours is read
        raise ImageTooLarge(f"{where}: more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels is over the pixel "
                            f"budget of {max_pixels / 1e6:g} megapixels; downscale the picture first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InputError(f"{where}: unreadable image ({err})") from None
    factor = min(rgb.size) // max(1, min_side) if min_side else 1
    if factor >= 2:
        rgb = rgb.reduce(factor)
        scale *= factor
    return Decoded(rgb, full, scale)


def decode_reduced(path: str, min_side: int) -> Decoded:
    """A file decoded at the smallest scale whose shortest side stays >= min_side (open_image_bounded)."""
    return open_image_bounded(path, min_side=min_side)


def load_image(image: ImageInput) -> Image.Image:
    """Open a path (or take a PIL image) and return it as RGB at full size, within the pixel
    budget; unreadable and oversized files raise InputError."""
    return open_image_bounded(image).image
