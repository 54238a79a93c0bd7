"""Self-contained HTML pieces: escaped text, tables, and images as base64 data URIs.

A page built from these opens from disk anywhere: inline CSS, no scripts, no links to files.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from ...train.bootstrap import score_text
from ..shown_text import MAX_SHOWN, shorten

MAX_ROWS = 200  # rows of one table; the rest are counted in a last row

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1150px;
       padding: 1em 1.5em 4em; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin: 1.2em 0 .4em; } .muted { color: #666; } .small { font-size: 12px; }
table { border-collapse: collapse; margin: .5em 0 1em; } th, td { padding: 3px 9px; border-bottom: 1px solid #eee;
  text-align: left; vertical-align: top; } th { background: #f6f6f6; } td.num, th.num { text-align: right;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
.up { color: #137a2c; } .down { color: #b3261e; }
p.verdict { font-size: 1.15em; margin: .4em 0; }
.plots img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0 .5em .5em 0; }
.query { margin: .9em 0; padding: .5em .7em; border: 1px solid #eee; border-radius: 6px; }
.query .caption { font-weight: 600; } .row { display: flex; align-items: center; gap: 6px; margin: 4px 0; }
.row .tag { width: 4.5em; color: #666; font-size: 12px; }
figure.thumb { margin: 0; position: relative; text-align: center; width: 76px; }
figure.thumb img { width: 64px; height: 64px; object-fit: contain; border: 3px solid #ddd; border-radius: 4px;
  background: #fff; } figure.thumb.hit img { border-color: #1a9e3f; }
figure.thumb figcaption { font-size: 10px; color: #555; line-height: 1.15; max-height: 2.4em; overflow: hidden; }
figure.thumb .mark { position: absolute; top: 0; right: 4px; background: #1a9e3f; color: #fff; font-size: 11px;
  border-radius: 8px; padding: 0 4px; }
.bar { display: inline-block; height: 10px; background: #6b8fd6; vertical-align: middle; }
code, pre { background: #f6f6f6; border-radius: 3px; padding: 1px 4px; } pre { padding: .6em; overflow-x: auto; }
"""


def esc(value, limit: int | None = MAX_SHOWN) -> str:
    """HTML-escaped and at most `limit` characters (a 20 MB caption made a 21 MB report); the
    tool's own sentences pass limit=None."""
    return html.escape(shorten(value, limit) if limit else str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_file_uri(path: str | Path) -> str | None:
    path = Path(path)
    return data_uri(path.read_bytes(), "image/png") if path.is_file() else None


def thumbnail_uri(path: str | Path, size: int = 64, quality: int = 82) -> str:
    """A small JPEG of the image (transparency flattened onto white) as a data URI."""
    with Image.open(path) as image:
        image.draft("RGB", (size * 2, size * 2))
        image = image.convert("RGBA")
        image.thumbnail((size, size))
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=quality)
    return data_uri(buffer.getvalue(), "image/jpeg")


def img(uri: str, alt: str, cls: str = "") -> str:
    return f'<img src="{uri}" alt="{esc(alt)}"{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>'


def table(header: Sequence[str], rows: Iterable[Sequence], numeric: Sequence[int] = ()) -> str:
    """Cells are escaped unless wrapped in Raw."""
    def cell(tag: str, i: int, value) -> str:
        cls = ' class="num"' if i in numeric else ""
        text = value.html if isinstance(value, Raw) else esc("" if value is None else value)
        return f"<{tag}{cls}>{text}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    rows = list(rows)
    shown = rows[:MAX_ROWS] + ([[f"({len(rows) - MAX_ROWS:,} more rows not shown)"]] if len(rows) > MAX_ROWS else [])
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in shown)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


class Raw:
    """HTML that table() must not escape."""

    def __init__(self, html_text: str):
        self.html = html_text


def words_class(words: str | None) -> str:
    """The CSS class of a change's words (bootstrap.words_for): green better, red worse, else none."""
    return {"better": "up", "worse": "down"}.get(words or "", "")


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def with_ci(value, interval) -> str:
    """A table cell: bootstrap.score_text's `0.250 [0.100, 0.400]` (the interval already chosen by
    the caller), the plain value without one, `–` for none."""
    if value is None:
        return "–"
    return score_text(value, interval, None) if interval else fmt(value)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
