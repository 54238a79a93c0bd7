"""Images that reach the search server: uploads decoded within a pixel budget, and thumbnails of a
collection's own image files, made once and kept in a bounded cache.

A request names a record id, never a path: the path comes from the record's `image_path` in the
index file, and only files the index names are ever opened.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..models.preprocess import to_rgb

MAX_PIXELS = 50_000_000
"""The most pixels an image may declare before it is decoded (a 7000 x 7000 photograph fits; a
decompression bomb of 60,000 x 60,000 is refused from its header, before any pixel is read)."""
THUMB_SIDE = 256


def open_bounded(source: bytes | Path, where: str, max_pixels: int = MAX_PIXELS, draft_side: int | None = None
                 ) -> Image.Image:
    """Decode bytes or a file into RGB, refusing before decoding an image that declares over `max_pixels`."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(f"{where}: image is {width} x {height} pixels, over the limit of {max_pixels:,}")
            if draft_side:
                image.draft("RGB", (draft_side, draft_side))  # JPEG decodes at 1/2..1/8 scale: faster thumbnails
            image.load()
            return to_rgb(image)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{where}: image file not found") from None
    except UnidentifiedImageError:
        raise InputError(f"{where}: not an image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{where}: unreadable image ({err})") from None


class ThumbnailCache:
    """JPEG thumbnails by image path, at most `max_bytes` held (least recently used dropped first)."""

    def __init__(self, side: int = THUMB_SIDE, max_bytes: int = 64 * 2**20):
        self.side = side
        self.max_bytes = max_bytes
        self.held: OrderedDict[str, bytes] = OrderedDict()
        self.size = 0
        self.lock = threading.Lock()

    def get(self, image_path: str, where: str) -> bytes:
        with self.lock:
            if image_path in self.held:
                self.held.move_to_end(image_path)
                return self.held[image_path]
        image = open_bounded(Path(image_path), where, draft_side=self.side)
        image.thumbnail((self.side, self.side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        data = out.getvalue()
        with self.lock:
            if image_path not in self.held:
                self.held[image_path] = data
                self.size += len(data)
            while self.size > self.max_bytes and self.held:
                _, dropped = self.held.popitem(last=False)
                self.size -= len(dropped)
        return data
