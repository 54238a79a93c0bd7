"""What a page or a published card may print of a value from someone's records or run folder:
at most MAX_SHOWN characters, escaped for where it goes, and no local absolute paths.

A 20 MB caption field made a 21 MB report; a label `a|b` split a Markdown table row and a label
`<script>` ran in renderers that allow HTML; published cards named the author's folders
(`/Users/name/...`). The HTML report escapes with `report.html.esc` (which shortens here); the
model card uses `md_cell`, `md_code` and `public_value`.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

__all__ = ["MAX_SHOWN", "shorten", "md_cell", "md_code", "public_value"]

MAX_SHOWN = 300  # characters of one value; a caption or label longer than this is cut with "…"

_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")


def shorten(value: Any, limit: int = MAX_SHOWN) -> str:
    """`str(value)` cut to `limit` characters, the last one an ellipsis when cut."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def md_cell(value: Any, limit: int = MAX_SHOWN) -> str:
    """A Markdown table cell: shortened, one line, HTML escaped (no tags run), `|` escaped."""
    text = " ".join(shorten(value, limit).split())
    return html.escape(text, quote=False).replace("|", "\\|")


def md_code(value: Any, limit: int = MAX_SHOWN) -> str:
    """Inline code: shortened, one line, in a fence longer than any run of backticks inside."""
    text = " ".join(shorten(value, limit).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _is_local_path(text: str) -> bool:
    return text.startswith(("/", "~")) or bool(_WINDOWS_ABSOLUTE.match(text))


def public_value(value: Any) -> Any:
    """`value` with every local absolute path (also inside lists and dicts) replaced by
    "NAME (a local path)": only the last part of the path is published."""
    if isinstance(value, str) and _is_local_path(value):
        name = (PureWindowsPath(value) if _WINDOWS_ABSOLUTE.match(value) else PurePosixPath(value)).name
        name = name or os.path.basename(value.rstrip("/\\"))
        return f"{name} (a local path)" if name and not name.startswith("~") else "a local path"
    if isinstance(value, (list, tuple)):
        return [public_value(v) for v in value]
    if isinstance(value, dict):
        return {k: public_value(v) for k, v in value.items()}
    return value
