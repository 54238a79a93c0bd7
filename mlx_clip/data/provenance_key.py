"""The fetch folder's secret key, which signs the provenance tag each stored copy carries
(:mod:`.stored_copy`): only files this folder's fetch wrote can name their own original.

The key is 32 random bytes in ``OUT/.provenance-key``, created once with mode 0600 and never
followed through a symbolic link. Anyone who can read the folder can read it, and may as well
edit its manifest: the key keeps out images served by others, not the folder's own users.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ..errors import InputError

__all__ = ["KEY_FILE", "folder_key", "existing_key"]

KEY_FILE = ".provenance-key"
_KEY_BYTES = 32


def existing_key(folder: Path) -> bytes | None:
    """The key of the fetch folder ``folder`` if it has one (a regular file of the right size)."""
    try:
        fd = os.open(folder / KEY_FILE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        key = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    return key if len(key) == _KEY_BYTES else None


def folder_key(folder: Path) -> bytes:
    """The key of ``folder``, made on first use (0600; a concurrent maker's key wins)."""
    key = existing_key(folder)
    if key is not None:
        return key
    path = folder / KEY_FILE
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        key = existing_key(folder)
        if key is None:
            raise InputError(f"{path}: not a key this tool wrote (32 bytes); remove it and run again") from None
        return key
    except OSError as err:
        raise InputError(f"{path}: cannot create ({err.strerror})") from None
    key = secrets.token_bytes(_KEY_BYTES)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key
