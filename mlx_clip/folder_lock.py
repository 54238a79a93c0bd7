"""One process per folder: the one lock that fetch (OUT/.fetch.lock) and a run (runs/NAME/.run.lock) hold.

An exclusive `flock` on a small file inside the folder that holds the holder's pid, so a second
process stops at once with one line naming that pid. The kernel drops the lock when the process
ends, however it ends, so a killed run never leaves a stale lock. The lock file is opened with
O_NOFOLLOW and must be a plain file with one name: a folder may come from someone else, and a
planted symlink (or hard link) would otherwise have us overwrite its target with our pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError


def _open_lock_file(path: Path) -> int:
    """The lock file's descriptor; InputError for a symlink, a hard link or anything not a plain file."""
    refused = f"{path}: is a link or not a plain file; a lock file is never followed (remove it and run again)"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise InputError(refused) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise InputError(refused)
    return fd


@contextmanager
def hold_folder_lock(folder: Path, lock_name: str, busy: str) -> Iterator[None]:
    """Hold `folder/lock_name` exclusively while the block runs. `busy` is the one-line error for a
    folder another process holds; `{pid}` in it becomes the holder's pid."""
    fd = _open_lock_file(folder / lock_name)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise InputError(busy.replace("{pid}", holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)
