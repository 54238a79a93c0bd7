"""The file training reads: a copy of each large image resized once at fetch time (issue 17),
whether it was downloaded or is a local ``--path-field`` file (whose copy goes to OUT/images while
the file itself stays where it is, only read: :mod:`.local_images`).

A 3000x2250 catalogue photo costs the training stream 25-500 ms to decode (JPEG with DCT
scaling; PNG and TIFF in full, which no reduced decode avoids); the same picture stored with its
longest side at 512 pixels decodes and augments at 83-300 images/s per thread alone (46-131
with two threads on shared cores; bench/README.md). Why 512 (``bench/bench_max_side.py``, pixels compared with the ideal ones cut
from the full-size decode): for 224-pixel models on photo-like pictures every size from 336 up is
within 0.7 grey levels on average; on a worst case with detail at every scale (1/f noise),
512 keeps training crops as close to the ideal as the stream on the originals is (1.95-1.97
against 1.96-2.09 grey levels on average, two runs; 448: 2.5, 336: 4.1) and evaluation within
1.6 (448: 2.0). Models
at 336-384 pixels lose more on such pictures at 512 (4-5 levels): pass ``--max-side 768``.

Which bytes a copy holds:
- photos (no transparency) become 8-bit JPEG, quality 92 with full-resolution colour (4:4:4):
  CMYK, 16-bit and palette pictures are converted to RGB (or greyscale stays L) once, the way
  training would convert them;
- pictures with transparency become PNG with their alpha (training puts them on white, other
  readers of the folder may not);
- EXIF orientation is applied, so the copy is upright with no orientation tag.

Each copy carries where it came from in its own file (a JPEG comment or PNG text chunk holding
the original's sha256, size and format), so a record's identity (the manifest's ``sha256``, which
groups duplicate images for the split and the loss) stays the original's across runs, a killed
run included, and a later run with another ``--max-side`` knows what it holds. The tag is trusted
only with a valid HMAC under the fetch folder's own secret key (:mod:`.provenance_key`): a served
image carrying a tag of its own cannot set its manifest ``sha256`` (issue 24).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from dataclasses import dataclass
from typing import Iterable

from PIL import Image, ImageOps, PngImagePlugin

from ..models.image_open import has_alpha, shown_size, to_rgb

__all__ = ["DEFAULT_MAX_SIDE", "Original", "StoredCopy", "target_size", "make_copy", "read_original"]

DEFAULT_MAX_SIDE = 512
JPEG_QUALITY = 92
REDUCING_GAP = 3.0  # decode/box-reduce down to 3x the target, then LANCZOS: as good as a full LANCZOS here
TAG = "mlx-clip-original"  # the JPEG comment / PNG text key that holds the original's identity


@dataclass(frozen=True)
class Original:
    """The file a copy was made from, downloaded or local (the record's identity)."""

    sha256: str
    width: int
    height: int
    format: str

    @property
    def longest_side(self) -> int:
        return max(self.width, self.height)


@dataclass(frozen=True)
class StoredCopy:
    """The bytes to store in place of an original, and what they are."""

    data: bytes
    format: str  # "JPEG" or "PNG"
    extension: str
    width: int
    height: int


def target_size(width: int, height: int, max_side: int) -> tuple[int, int] | None:
    """(width, height) with the longest side at ``max_side``, aspect kept; None when the picture
    is kept as it is (``max_side`` 0, or not larger than ``max_side``)."""
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return None
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _mac(key: bytes, fields: dict) -> str:
    message = json.dumps([fields["sha256"], fields["width"], fields["height"], fields["format"]]).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def make_copy(data: bytes, original: Original, max_side: int, key: bytes = b"") -> StoredCopy:
    """Decode ``data`` reduced, apply EXIF orientation and resize (LANCZOS, reducing gap 3) so
    the longest side is ``max_side``; encode as JPEG, or PNG when it has transparency. The tag is
    signed with ``key`` (the fetch folder's); without one it is never trusted when read."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = shown_size(image)
        size = target_size(width, height, max_side)
        if size is None:
            raise ValueError(f"{width}x{height} is not larger than {max_side}; the original is kept")
        if image.format == "JPEG":  # DCT scaling to >= REDUCING_GAP x the target: 4-8x faster, same result
            scale = max_side * REDUCING_GAP / max(width, height)
            image.draft(image.mode if image.mode in ("L", "RGB") else None,
                        (int(image.width * scale), int(image.height * scale)))
        image.load()
        icc = image.info.get("icc_profile")
        alpha = has_alpha(image)
        grey = image.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I;16N", "I", "F") and not alpha
        kept_mode = image.mode in ("L", "RGB", "RGBA", "LA")
        if alpha:
            picture = ImageOps.exif_transpose(image)
            picture = picture.convert("LA" if picture.mode in ("L", "LA") else "RGBA")
        else:
            picture = to_rgb(image)  # CMYK, 16-bit, palette: converted as training converts them
            if grey:
                picture = picture.convert("L")
    picture = picture.resize(size, Image.LANCZOS, reducing_gap=REDUCING_GAP)
    fields = {"sha256": original.sha256, "width": original.width, "height": original.height,
              "format": original.format}
    tag = json.dumps({**fields, "mac": _mac(key, fields)} if key else fields)
    out = io.BytesIO()
    options = {"icc_profile": icc} if icc and kept_mode else {}
    if alpha:
        info = PngImagePlugin.PngInfo()
        info.add_text(TAG, tag)
        picture.save(out, format="PNG", pnginfo=info, **options)
        image_format, extension = "PNG", "png"
    else:
        picture.save(out, format="JPEG", quality=JPEG_QUALITY, subsampling=0,
                     comment=f"{TAG} {tag}".encode("utf-8"), **options)
        image_format, extension = "JPEG", "jpg"
    return StoredCopy(out.getvalue(), image_format, extension, picture.width, picture.height)


def read_original(data: bytes, keys: Iterable[bytes]) -> Original | None:
    """The original a stored copy was made from, from its tag signed with one of ``keys``; None
    for a file with no tag (an original stored as it was, or a file from before copies) or whose
    tag no key signed (a downloaded file carrying a tag of its own: its bytes are its identity)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                comment = image.info.get("comment", b"")
                text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else str(comment)
                if not text.startswith(TAG + " "):
                    return None
                text = text[len(TAG) + 1:]
            elif image.format == "PNG":
                text = image.info.get(TAG)
                if not isinstance(text, str):
                    return None
            else:
                return None
        fields = json.loads(text)
        mac = str(fields["mac"])
        if not any(hmac.compare_digest(_mac(key, fields), mac) for key in keys if key):
            return None
        return Original(str(fields["sha256"]), int(fields["width"]), int(fields["height"]), str(fields["format"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
