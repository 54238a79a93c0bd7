"""Records whose image is a local file (``--path-field``): checked, then read where it is, or,
when its longest side is over ``--max-side``, through a resized copy in OUT/images made once
(issue 17: a 3000x2250 PNG or TIFF decodes at 4-8 images/s, which would hold training back on
every epoch; the copy decodes 10-40x faster).

The copy follows the rules of a downloaded image's copy (:mod:`.stored_copy`): the manifest's
``sha256`` stays the local file's, so duplicate grouping, the split and resume do not change, and
a later run with another ``--max-side`` makes it again from the local file, which is still there.
The user's files are only ever read: never written, moved or deleted, and never kept again in
OUT/originals (``--keep-originals`` has nothing to keep for them).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from PIL import Image

from ..io import NotARegularFile, open_regular
from .image_files import ImageProblem, inspect_image, sha256_hex
from .image_store import ImageStore, Stored
from .stored_copy import Original

__all__ = ["LocalImage", "read_local_file", "settle_local"]


@dataclass(frozen=True)
class LocalImage:
    """What the records naming one local file read, by record key, and how many copies this run wrote."""

    stored: dict[str, Stored]
    made: int


def settle_local(store: ImageStore, source: Path, keys: Sequence[str], deadline: float | None = None) -> LocalImage:
    """The file each key's records read for the local image ``source``: ``source`` itself when
    it is no larger than the store's max_side (0: always), else a resized copy, made unless an
    earlier run left one of this size from the same bytes. Raises :class:`ImageProblem` (also for
    a source that is not a regular file, or not read within ``deadline`` seconds).

    A file that is itself a copy fetch made (a manifest's images sampled again) keeps the
    identity it carries: the sha256 and size of the image it was made from.
    """
    data = read_local_file(source, deadline)
    tagged = store.tagged_original(data, source.absolute())
    if not store.max_side or _longest_side(data) <= store.max_side:
        info = inspect_image(data)
        original = tagged or Original(sha256_hex(data), info.width, info.height, info.format)
        for key in keys:
            store.forget(key)  # a copy an earlier run made at a smaller --max-side is read no more
        return LocalImage({key: Stored(source, info.width, info.height, original) for key in keys}, 0)
    sha = tagged.sha256 if tagged else sha256_hex(data)
    stored: dict[str, Stored] = {}
    for key in keys:
        current = store.current_copy(key, sha)
        if current is not None:
            stored[key] = replace(current, original_path=source)
    missing = [key for key in keys if key not in stored]
    if missing:
        info = inspect_image(data)  # decoded in full once, as every local file was before copies
        original = tagged or Original(sha, info.width, info.height, info.format)
        first = store.write_copy(missing[0], data, original)
        for key in missing:
            copy = first if key == missing[0] else store.duplicate(key, first)
            stored[key] = replace(copy, original_path=source)
    return LocalImage(stored, len(missing))


def read_local_file(source: Path, deadline: float | None = None) -> bytes:
    """The bytes of the local image file ``source``, which must be a regular file: a FIFO would
    block forever and /dev/zero never end, so those (and folders, devices) are the record's
    failure before any byte is read. The read stops after ``deadline`` seconds (fetch's --deadline)."""
    try:
        handle = open_regular(source)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageProblem("missing_file", "no such file") from None
    except (IsADirectoryError, NotARegularFile):
        raise ImageProblem("not_a_file", "not a regular file (a folder, FIFO or device); name an image file") from None
    except OSError as e:
        raise ImageProblem("missing_file", e.strerror or str(e)) from None
    with handle:
        ends = time.monotonic() + deadline if deadline else None
        chunks = []
        while chunk := handle.read(1 << 20):
            chunks.append(chunk)
            if ends is not None and time.monotonic() > ends:
                raise ImageProblem("deadline", f"not read within {deadline:g} s")
        return b"".join(chunks)


def _longest_side(data: bytes) -> int:
    """From the header alone; 0 for bytes Pillow cannot open (inspect_image then says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return max(image.size)
    except Exception:
        return 0
