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

from PIL import Image

from ..errors import InputError
from ..models.image_open import open_image_bounded

MAX_PIXELS = 50_000_000
"""The most pixels an image reaching the server may declare before it is decoded (a 7000 x 7000
photograph fits; a decompression bomb of 60,000 x 60,000 is refused from its header, before any
pixel is read): below the package's budget, since a page serves many at once."""
THUMB_SIDE = 256


def open_bounded(source: bytes | Path, where: str, max_pixels: int = MAX_PIXELS, draft_side: int | None = None
                 ) -> Image.Image:
    """RGB of bytes or a file through the package's one bounded opener (models/image_open.py), at
    reduced scale when `draft_side` allows; its one-line errors name `where` (a record, an upload)."""
    try:
        return open_image_bounded(source, max_pixels, min_side=draft_side or 0).image
    except InputError as err:
        detail = str(err).split(": ", 1)[-1]  # the opener names bytes by their size; the page names the record
        raise type(err)(f"{where}: {detail}") from None


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
