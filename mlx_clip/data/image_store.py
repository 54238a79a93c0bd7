"""What fetch keeps on disk for one record key: the file training reads (the original, or a
resized copy when it is larger than --max-side), the original beside it with --keep-originals,
and how a later run with another --max-side settles what an earlier run left. A local file's
copy (:mod:`.local_images`) lives here too; the local file itself is never written."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..io import write_bytes
from .image_files import ImageInfo, ImageProblem, find_image_file, image_file, image_stem, inspect_image, sha256_hex
from .provenance_key import existing_key, folder_key
from .stored_copy import Original, make_copy, read_original, target_size

__all__ = ["Stored", "Existing", "ImageStore"]


@dataclass(frozen=True)
class Stored:
    """The file a record's manifest line points at, and the original it stands for."""

    path: Path
    width: int  # of the stored file
    height: int
    original: Original
    original_path: Path | None = None  # the original's file: kept with --keep-originals, or a local file copied

    @property
    def resized(self) -> bool:
        return max(self.width, self.height) < self.original.longest_side


@dataclass(frozen=True)
class Existing:
    """A valid file an earlier run stored for a key, and the original's bytes if they are on disk
    (the file itself when it was stored unchanged, else a kept original)."""

    stored: Stored
    original_data: bytes | None
    original_info: ImageInfo | None


class ImageStore:
    """Files under ``images_dir`` (and ``originals_dir``) for record keys, at most ``max_side``
    pixels on the longest side (0: full size)."""

    def __init__(self, images_dir: Path, originals_dir: Path, max_side: int, keep_originals: bool):
        self.images_dir = images_dir
        self.originals_dir = originals_dir
        self.max_side = max_side
        self.keep_originals = keep_originals
        self.key = folder_key(images_dir.parent)  # signs the tags of the copies this folder holds

    def tagged_original(self, data: bytes, source: Path | None = None) -> Original | None:
        """The original a copy names in its tag, if this folder signed it, or (a local ``source``
        that is a copy another fetch folder made: OUT/images/ab/file) that folder did."""
        keys = [self.key]
        if source is not None and len(source.parents) > 2 and source.parents[1].name == self.images_dir.name:
            keys.append(existing_key(source.parents[2]) or b"")
        return read_original(data, keys)

    def wanted_side(self, original: Original) -> int:
        """The longest side the stored file should have."""
        size = target_size(original.width, original.height, self.max_side)
        return max(size) if size else original.longest_side

    def write(self, key: str, data: bytes, info: ImageInfo) -> Stored:
        """Store an original's bytes for ``key``: unchanged when small enough, else a resized copy
        (and the original in ``originals_dir`` with keep_originals)."""
        original = Original(sha256_hex(data), info.width, info.height, info.format)
        if target_size(info.width, info.height, self.max_side) is None:
            path = self._put(self.images_dir, key, info.extension, data)
            self._remove(self.originals_dir, key)  # stored as it is: the file is its own original
            return Stored(path, info.width, info.height, original, path if self.keep_originals else None)
        kept = self._put(self.originals_dir, key, info.extension, data) if self.keep_originals else None
        return replace(self.write_copy(key, data, original), original_path=kept)

    def write_copy(self, key: str, data: bytes, original: Original) -> Stored:
        """Store a resized copy of ``data`` (larger than max_side) for ``key``, and nothing else."""
        copy = make_copy(data, original, self.max_side, self.key)
        path = self._put(self.images_dir, key, copy.extension, copy.data)
        return Stored(path, copy.width, copy.height, original)

    def duplicate(self, key: str, source: Stored) -> Stored:
        """Store for ``key`` the file another key of the same URL or local file already holds (no original needed)."""
        path = self._put(self.images_dir, key, source.path.suffix.lstrip("."), source.path.read_bytes())
        return Stored(path, source.width, source.height, source.original)

    def lookup(self, key: str) -> Existing | None:
        """The valid file an earlier run stored for ``key``; an invalid one is removed."""
        path = find_image_file(self.images_dir, key)
        if path is None:
            return None
        data = path.read_bytes()
        try:
            info = inspect_image(data)
        except ImageProblem:
            path.unlink()
            return None
        if path.suffix != "." + info.extension:
            path.unlink()
            return None
        original = self.tagged_original(data)
        if original is None:  # stored unchanged by an earlier run (or before copies existed)
            original = Original(sha256_hex(data), info.width, info.height, info.format)
            return Existing(Stored(path, info.width, info.height, original, path), data, info)
        kept = find_image_file(self.originals_dir, key)
        kept_data = kept.read_bytes() if kept is not None else None
        if kept_data is None or sha256_hex(kept_data) != original.sha256:
            return Existing(Stored(path, info.width, info.height, original), None, None)
        return Existing(Stored(path, info.width, info.height, original, kept), kept_data, inspect_image(kept_data))

    def current_copy(self, key: str, sha256: str) -> Stored | None:
        """The copy an earlier run made for ``key`` of the original with this sha256, if it has
        this run's size (then the original need not be decoded again)."""
        existing = self.lookup(key)
        if existing is None:
            return None
        stored = existing.stored
        side = max(stored.width, stored.height)
        if stored.original.sha256 != sha256 or not stored.resized or side != self.wanted_side(stored.original):
            return None
        return stored

    def forget(self, key: str) -> None:
        """Remove the files an earlier run stored for ``key`` in images_dir (a copy no longer read)."""
        self._remove(self.images_dir, key)

    def settle(self, key: str, existing: Existing) -> tuple[Stored | None, bool]:
        """``existing`` made right for this run's max_side and keep_originals, and whether a file
        was rewritten; (None, False) when that needs the original downloaded again (the stored
        copy is smaller than wanted, or keep_originals asks for an original no longer on disk).
        A kept original stays kept (and named) even when this run does not ask for it."""
        stored = existing.stored
        side, wanted = max(stored.width, stored.height), self.wanted_side(stored.original)
        if existing.original_data is not None and existing.original_info is not None:
            if side != wanted:
                return self.write(key, existing.original_data, existing.original_info), True
            if not stored.resized:  # the file is its own original
                return replace(stored, original_path=stored.path if self.keep_originals else None), False
            return stored, False
        if self.keep_originals or side < wanted:
            return None, False
        if side == wanted:
            return stored, False
        return self.write_copy(key, stored.path.read_bytes(), stored.original), True  # a smaller copy of the copy

    # -- files ----------------------------------------------------------------------------

    def _put(self, folder: Path, key: str, extension: str, data: bytes) -> Path:
        """Write ``data`` as ``key``'s file in ``folder``, then remove its files of other extensions."""
        path = image_file(folder, key, extension)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
        self._remove(folder, key, keep=path)
        return path

    @staticmethod
    def _remove(folder: Path, key: str, keep: Path | None = None) -> None:
        stem = image_stem(key)
        sub = folder / stem[:2]
        if sub.is_dir():
            for other in sub.glob(f"{stem}.*"):
                if other != keep and other.is_file():
                    other.unlink()
