"""InputError: the one-line message users see, the one line for an output folder that is full or
read-only, and the one place hub tokens are scrubbed from whatever a command prints."""

from __future__ import annotations

import errno
import os
import re

TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")
# A hub token's shape (hf_ and 34 letters or digits; 30+ to be safe), and an Authorization header's value.
TOKEN_PATTERNS = (re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
                  re.compile(r"(?i)\b(authorization\s*[:=]\s*['\"]?)(bearer\s+|token\s+|basic\s+)?[^\s'\",}]+"),
                  re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"))


class InputError(ValueError):
    """Bad input from the user: its message is one line that says what and where (any hub token
    in it is scrubbed whenever it is shown)."""

    def __str__(self) -> str:
        return scrub_tokens(super().__str__())


def known_tokens() -> list[str]:
    """Hub tokens this process could see (env and login cache), to keep them out of any output."""
    found = [os.environ.get(name) for name in TOKEN_ENV]
    try:
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # no huggingface_hub, or an unreadable token cache: nothing more to scrub
        pass
    return [t for t in found if t and len(t) >= 8]


def scrub_tokens(text: str, extra: list[str | None] | None = None) -> str:
    """`text` with every known hub token (and `extra`), anything shaped like one and every
    Authorization header value replaced by ***: error lines and cards get printed and shared."""
    for token in known_tokens() + [t for t in (extra or []) if t]:
        text = text.replace(token, "***")
    text = TOKEN_PATTERNS[0].sub("hf_***", text)
    text = TOKEN_PATTERNS[1].sub(lambda m: (m.group(1) or "") + (m.group(2) or "") + "***", text)
    return TOKEN_PATTERNS[2].sub(lambda m: m.group(1) + "***", text)


def error_line(err: BaseException) -> str:
    """The one line a command prints for `err`: its first line, tokens scrubbed."""
    lines = str(err).strip().splitlines()
    return "error: " + scrub_tokens(lines[0] if lines else type(err).__name__)


def write_error_line(err: OSError, resume_hint: str) -> str | None:
    """One line for an output folder that is full or cannot be written; None for other errors."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return scrub_tokens(f"error: {err.filename}: {err.strerror}; free space, then {resume_hint}")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return scrub_tokens(f"error: {err.filename}: {err.strerror}")
    return None
