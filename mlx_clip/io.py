"""The one atomic write (every file the package writes goes through `atomic_file`), and the one
guarded open for files someone else named (`open_regular`).

A reader (or a run started after a crash) sees the old file or the new one, never half of
one: the bytes go to `NAME.<random>.part` in the same folder (so the rename stays on one file
system), are flushed and fsynced, then renamed onto NAME. The file is created 0666 and the
umask decides who may read it (`tempfile.mkstemp` would make every output 0600). On any
failure (disk full, read-only folder, Ctrl-C) the temporary file is removed and an OSError
names NAME, not the temporary name (MLX's write errors name no file). Stale `*.part` files a
killed process left are removed by the commands that own the folder (`remove_partial_writes`,
the fetcher).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, BinaryIO, Iterable, Iterator

import mlx.core as mx

from .errors import InputError

PART_SUFFIX = ".part"


class NotARegularFile(OSError):
    """A path naming a FIFO, a device or a socket: reading it could block forever or never end."""


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading, refused before a byte is read unless it is a regular file.

    A file named by someone else's manifest, index or model folder may be a FIFO (an open would
    wait forever for its writer, so the open here never waits) or /dev/zero (a read would never
    end). Raises FileNotFoundError, IsADirectoryError, NotARegularFile or another OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        if not stat.S_ISREG(mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file (a FIFO, device or socket)", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def hash_file(path: str | Path, digest: Any = None) -> Any:
    """`digest` (a new sha256 when None) updated with the file's bytes in 1 MiB blocks, through
    open_regular: a file of any size costs one block of memory, and a FIFO is refused, never waited on."""
    digest = hashlib.sha256() if digest is None else digest
    with open_regular(path) as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest


SMALL_FILE_BYTES = 64 << 20
"""The most a settings-sized file may hold (a config.json, a tokenizer's vocabulary, a run's
split.json, a model's README): the largest a model ships, SigLIP 2's tokenizer.json, is 34 MB."""


class OverLimit(Exception):
    """A file holding more than its reader's limit: `size` from its size before a byte was read
    (or as read, when it grew while being read)."""

    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


def read_capped(path: str | Path, limit: int) -> bytes:
    """`path`'s bytes through open_regular, refused (OverLimit) from its size before a byte is read
    when it holds more than `limit` (a sparse file of terabytes costs its maker nothing), and when
    it grows past `limit` while read. The one bounded read: settings files and records files."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise OverLimit(size)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OverLimit(len(data))
    return data


def read_small_bytes(path: str | Path, limit: int = SMALL_FILE_BYTES) -> bytes:
    """A settings-sized file from a folder someone else may have made (read_capped). Raises
    FileNotFoundError (callers say what was missing) or InputError naming the file: a FIFO, a
    device or a folder, or one too large."""
    try:
        return read_capped(path, limit)
    except (NotARegularFile, IsADirectoryError) as err:
        raise InputError(f"{path}: {err.strerror}, not a file of settings") from None
    except OverLimit as over:
        raise InputError(f"{path}: {over.size:,} bytes is more than the {limit >> 20} MiB a settings "
                         "file may hold") from None


def read_small_text(path: str | Path, limit: int = SMALL_FILE_BYTES) -> str:
    """read_small_bytes as UTF-8 text (a UnicodeDecodeError as read_text would raise it)."""
    return read_small_bytes(path, limit).decode("utf-8")


def flush_to_disk(handle: IO) -> None:
    """Python's buffer to the OS, the OS's cache to the disk: a full disk fails here, not later."""
    handle.flush()
    os.fsync(handle.fileno())


def fsync_folder(folder: str | Path) -> None:
    """Make renames and new names in `folder` durable (the entries, not only the files' bytes)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", durable_name: bool = False) -> Iterator[IO]:
    """An open temporary file beside `path`, renamed onto it when the block succeeds.

    `mode` is "wb" or "w" (UTF-8 text). `durable_name=True` also fsyncs the folder after the
    rename, for a file that must survive a power cut under its new content (checkpoints/latest).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            flush_to_disk(handle)
        os.replace(tmp, path)
        if durable_name:
            fsync_folder(path.parent)
    except BaseException as err:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename in (None, str(tmp)):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any) -> None:
    """Indented UTF-8 JSON with a final newline (config.json, metrics.json, split.json ...)."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Rows as JSON Lines (UTF-8, one object a line).

    A row holding text UTF-8 cannot encode (a lone surrogate such as ``"\\ud83d"`` from a title
    cut inside an emoji) is written with ``\\u`` escapes instead, so it reads back unchanged.
    """
    lines = []
    for row in rows:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        try:
            lines.append(line.encode("utf-8"))
        except UnicodeEncodeError:
            lines.append((json.dumps(row, ensure_ascii=True) + "\n").encode("ascii"))
    write_bytes(path, b"".join(lines))


def write_safetensors(path: str | Path, arrays: dict[str, mx.array], metadata: dict[str, str] | None = None) -> None:
    """mx.save_safetensors through a Python file object, atomically.

    Given a path, MLX 0.32 ignores write errors: on a full disk it leaves a truncated file and
    raises nothing. Through a file object the OSError (ENOSPC) reaches the caller.
    """
    with atomic_file(path) as handle:
        mx.save_safetensors(handle, arrays, metadata=metadata)


def json_kind(value: Any) -> str:
    """What a JSON value is, in words, for a message ("an object", "an array", ...)."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def jsonl_objects(lines: Iterable[str], where: str | Path) -> Iterator[tuple[int, dict]]:
    """The one JSON Lines reader: (line number, object) for each non-blank line of `lines`, and one
    InputError line naming the file and line for one that is not a JSON object."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: line {number}: invalid JSON at column {err.colno} ({err.msg})") from None
        except RecursionError:  # thousands of nested brackets: refused, never a traceback
            raise InputError(f"{where}: line {number}: JSON nested too deep") from None
        if not isinstance(value, dict):
            raise InputError(f"{where}: line {number}: expected a JSON object, got {json_kind(value)}")
        yield number, value


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a UTF-8 JSON Lines file, read a line at a time (memory bounded by
    the longest line, not the file); see :func:`jsonl_objects`."""
    with Path(path).open(encoding="utf-8", newline="\n") as lines:
        yield from jsonl_objects(lines, path)
