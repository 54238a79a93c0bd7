"""InputError: the one-line message users see, and the one line for an output folder that
is full or read-only."""

import errno


class InputError(ValueError):
    """Bad input from the user: its message is one line that says what and where."""


def write_error_line(err: OSError, resume_hint: str) -> str | None:
    """One line for an output folder that is full or cannot be written; None for other errors."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"error: {err.filename}: {err.strerror}; free space, then {resume_hint}"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"error: {err.filename}: {err.strerror}"
    return None
