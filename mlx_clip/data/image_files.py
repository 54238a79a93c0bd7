"""Image files on disk: stable names, Pillow validation, stale partial writes (written by mlx_clip.io)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..io import PART_SUFFIX, hash_file
from ..models.image_open import HEIF_HINT, ImageTooLarge, check_pixels, unreadable_heif

__all__ = [
    "ImageInfo",
    "ImageProblem",
    "inspect_image",
    "image_stem",
    "image_file",
    "find_image_file",
    "remove_partial_files",
    "sha256_hex",
]


_EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "TIFF": "tif",
    "BMP": "bmp",
    "MPO": "jpg",  # multi-picture JPEG (many camera files) is still a JPEG on disk
    "JPEG2000": "jp2",
    "ICO": "ico",
    "PPM": "ppm",
    "AVIF": "avif",
    "HEIF": "heic",
}


@dataclass(frozen=True)
class ImageInfo:
    """What Pillow found in a decodable image."""

    format: str  # Pillow's name, e.g. "JPEG"
    extension: str  # file extension without the dot, e.g. "jpg"
    width: int
    height: int


class ImageProblem(Exception):
    """Bytes that are not a usable image (or a local file that cannot be read); ``reason`` is a
    short stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def inspect_image(data: bytes) -> ImageInfo:
    """Check that ``data`` decodes fully as an image and say what it is.

    ``Image.verify()`` checks the structure, and a second open with ``load()`` decodes every
    pixel, which catches truncated files. Raises :class:`ImageProblem` with reason
    ``not_an_image``, ``truncated_image``, ``too_large`` (over the pixel budget, MAX_PIXELS) or
    ``decode_error`` (any other error a Pillow plugin raises on damaged data).
    """
    if not data:
        raise ImageProblem("not_an_image", "empty body")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
            check_pixels(*image.size, "the image")  # from the header, before a pixel is decoded
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
    except UnidentifiedImageError:
        head = data[:64].lstrip().lower()
        kind = ("HTML page" if head.startswith((b"<!doctype html", b"<html")) else
                HEIF_HINT if unreadable_heif(data[:12]) else "unknown data")
        raise ImageProblem("not_an_image", f"{kind}, {len(data):,} bytes") from None
    except ImageTooLarge as e:
        raise ImageProblem("too_large", str(e).split(": ", 1)[1]) from None
    except Image.DecompressionBombError as e:
        raise ImageProblem("too_large", str(e).split(".")[0]) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise ImageProblem("truncated_image", f"{type(e).__name__}: {e}"[:200]) from None
    except Exception as e:  # a damaged file can make a plugin raise anything (DDS: NotImplementedError)
        raise ImageProblem("decode_error", f"{type(e).__name__}: {e}"[:200]) from None
    extension = _EXTENSIONS.get(image_format, image_format.lower() or "img")
    if not extension.isalnum():
        extension = "img"
    return ImageInfo(format=image_format, extension=extension, width=width, height=height)


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as hex."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file as hex (io.hash_file: in blocks, a FIFO refused)."""
    return hash_file(path).hexdigest()


def image_stem(key: str) -> str:
    """The file name stem for a record key: the SHA-1 hex of the key (never the remote name).

    ``surrogatepass`` lets a key holding a lone surrogate (a title cut inside an emoji) get a
    name too; any other key hashes exactly as plain UTF-8.
    """
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


def image_file(images_dir: Path, key: str, extension: str) -> Path:
    """``images_dir/ab/abcdef....<extension>`` for ``key``, checked to stay in ``images_dir``."""
    stem = image_stem(key)
    path = images_dir / stem[:2] / f"{stem}.{extension}"
    root = images_dir.resolve()
    if not path.resolve().is_relative_to(root):  # cannot happen with hex names; kept as a guard
        raise AssertionError(f"{path} leaves {root}")
    return path


def find_image_file(images_dir: Path, key: str) -> Path | None:
    """The finished file for ``key`` from an earlier run, whatever its extension, if any."""
    stem = image_stem(key)
    folder = images_dir / stem[:2]
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob(f"{stem}.*")):
        if path.suffix != PART_SUFFIX and path.is_file():
            return path
    return None


def remove_partial_files(folder: Path) -> int:
    """Delete ``*.part`` files a killed run left under ``folder``; return how many."""
    removed = 0
    if folder.is_dir():
        for path in folder.rglob(f"*{PART_SUFFIX}"):
            if path.is_file():
                path.unlink()
                removed += 1
    return removed
