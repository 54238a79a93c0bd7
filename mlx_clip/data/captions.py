"""Captions from catalogue metadata: `{field}` templates with dotted paths, or a default.

A template such as "{object_type} from the {period}, found at {findspot}" renders each
record; a field that is missing or empty is dropped together with the literal text that
leads into it (" from the "), so no "None", no "from the ," and no dangling commas remain.
Several templates are drawn at random per sample and epoch (seeded by the caller).
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..wording import counted
from .records import get_field_or_none, has_field

_OPEN_TO_CLOSE = {"(": ")", "[": "]", "{": "}", "\u201c": "\u201d", '"': '"'}

# Default captions: which record fields read as a title, a category, or keywords.
TITLE_KEYS = ("title", "name", "label", "object_name", "objectname", "object_type", "objecttype",
              "caption", "common_name")
CATEGORY_KEYS = ("category", "type", "classification", "object_type", "period", "culture", "material",
                 "medium", "technique", "department", "genre", "style", "school", "dynasty", "century")
KEYWORD_KEYS = ("keywords", "tags", "subjects", "subject", "topics")
SKIP_KEY = re.compile(
    r"(^|_|\b)(id|ids|uuid|guid|url|uri|urls|href|link|path|file|filename|sha\d*|md5|hash|checksum|"
    r"width|height|size|bytes|image|images|thumbnail|iiif|accession|inventory|number|no|lat|lon|lng|"
    r"latitude|longitude|license|licence|rights|credit|copyright|created|modified|updated|"
    r"code|codes|unicode|codepoint|sku)($|_|\b)",
    re.IGNORECASE)
_URLISH = re.compile(r"^(https?://|ftp://|s3://|file:|www\.|/|[A-Za-z]:\\)")
_HEXISH = re.compile(r"^[0-9a-fA-F]{16,}$")
_NUMBERISH = re.compile(r"^[\s\d.,:/+-]+$")
_CODEISH = re.compile(r"^(?=\S*\d)\S+$")  # one token with a digit in it: "1F44E", "BM-1897,0401.12"


def value_text(value: Any) -> str:
    """A field's value as caption text: lists joined with ", ", numbers without ".0", None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (value_text(v) for v in value) if t)
    if isinstance(value, dict):
        return ", ".join(t for t in (value_text(v) for v in value.values()) if t)
    return " ".join(str(value).split())


def clean_caption(text: str) -> str:
    """Collapse spaces, stray and doubled commas, empty brackets, and punctuation at the edges."""
    text = " ".join(text.split())
    for _ in range(3):
        text = re.sub(r"\(\s*[,;:]*\s*\)|\[\s*[,;:]*\s*\]", "", text)
        text = re.sub(r"\s+([,;:.!?)\]])", r"\1", text)
        text = re.sub(r"([(\[])\s+", r"\1", text)
        text = re.sub(r"([,;:])(\s*[,;:])+", r"\1", text)
        text = " ".join(text.split())
    # str.strip, not an anchored regex: `[...]+$` retries at every character of a long run of
    # these in mid-text, so a 120 KB field of "- - -" took 47 s (quadratic); strip is linear.
    return text.lstrip(" ,;:.-–—/|").rstrip(" ,;:-–—/|")


@dataclass
class Template:
    """A parsed caption template: literal chunks and the dotted field paths between them."""

    text: str
    literals: list[str] = field(default_factory=list)  # len(fields) + 1
    fields: list[str] = field(default_factory=list)
    specs: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "Template":
        template = cls(text)
        literal = ""
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as err:
            raise InputError(f"caption template {text!r}: {err}") from None
        for prefix, name, spec, _conversion in parsed:
            literal += prefix
            if name is None:
                continue
            if not name.strip():
                raise InputError(f"caption template {text!r}: empty field {{}}; name a record field")
            template.literals.append(literal)
            template.fields.append(name.strip())
            template.specs.append(spec or "")
            literal = ""
        template.literals.append(literal)
        if not template.fields:
            raise InputError(f"caption template {text!r} has no {{field}}; e.g. \"{{title}} from the {{period}}\"")
        return template

    def render(self, record: Any) -> str:
        """The caption for one record; empty fields leave out the literal text that leads into them."""
        values = []
        for name, spec in zip(self.fields, self.specs):
            value = get_field_or_none(record, name)
            if spec and isinstance(value, str):  # "37.971532" from a CSV takes "{lat:.4f}" as 37.971532 does
                value = _as_number(value, value)
            try:
                if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
                    values.append(format(value, spec))
                    continue
            except ValueError:  # a spec that does not fit this number ("{n:d}" on 3.5): the value as it is
                pass
            values.append(value_text(value))
        out = ""
        pending_close = ""
        for i, value in enumerate(values):
            lead = self.literals[i]
            if pending_close:  # the previous field was dropped with an opening bracket
                lead = _drop_leading_close(lead, pending_close)
                pending_close = ""
            if value:
                out += lead + value
                continue
            # Keep only what ends the previous part ("," or ")" before the dropped field's words).
            keep, dropped = _split_lead(lead) if i > 0 else ("", lead)
            out += keep
            pending_close = _unclosed(dropped)
        tail = self.literals[-1]
        if pending_close:
            tail = _drop_leading_close(tail, pending_close)
        if not any(values):
            return ""
        return clean_caption(out + tail)


def _as_number(text: str, default: object) -> object:
    """A numeric string as a float (finite), else `default`."""
    try:
        number = float(text)
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def _split_lead(lead: str) -> tuple[str, str]:
    """Split the literal between two fields into what closes the previous one and what leads into the next."""
    match = re.match(r"^([\s]*[)\]\u201d]*)", lead)
    keep = match.group(1) if match else ""
    return keep, lead[len(keep):]


def _unclosed(text: str) -> str:
    """Closing brackets for the brackets `text` opens and leaves open."""
    stack = []
    for ch in text:
        if ch in _OPEN_TO_CLOSE and ch != '"':
            stack.append(_OPEN_TO_CLOSE[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
    return "".join(reversed(stack))


def _drop_leading_close(text: str, closes: str) -> str:
    for close in closes:
        index = text.find(close)
        if index >= 0 and not text[:index].strip(" ,;:"):
            text = text[:index] + text[index + 1:]
    return text


def default_caption(record: dict) -> str:
    """A caption from a record's text fields: title-like first, then categories, then keywords."""
    if not isinstance(record, dict):
        return value_text(record)
    lowered = {str(k).lower(): k for k in record}
    used: set[str] = set()
    parts: list[str] = []

    def take(key: str) -> None:
        text = _usable_text(record[key])
        if text and text.lower() not in (p.lower() for p in parts):
            parts.append(text)
        used.add(key)

    for group in (TITLE_KEYS, CATEGORY_KEYS, KEYWORD_KEYS):
        for name in group:
            if name in lowered and lowered[name] not in used:
                take(lowered[name])
    for key in record:  # other short text fields, in the record's order
        if key in used or SKIP_KEY.search(str(key)) or len(parts) >= 6:
            continue
        text = _usable_text(record[key])
        if text and len(text) <= 80 and not _CODEISH.match(text):
            take(key)
    return clean_caption(", ".join(parts))


def _usable_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        texts = [_usable_text(v) for v in value if not isinstance(v, (dict, list))]
        return ", ".join(t for t in texts if t)
    if not isinstance(value, str):
        return ""
    text = " ".join(value.split())
    if not text or _URLISH.match(text) or _HEXISH.match(text) or _NUMBERISH.match(text):
        return ""
    return text


@dataclass
class CaptionReport:
    captions: int
    truncated: int
    max_tokens: int
    empty_records: int

    def line(self, context_length: int) -> str:
        return (f"{self.captions:,} captions, {self.truncated:,} longer than {context_length} tokens "
                f"(truncated), longest {self.max_tokens} tokens"
                + (f"; {counted(self.empty_records, 'record has', 'records have')} no caption text"
                   if self.empty_records else ""))


class CaptionBuilder:
    """Every record's caption options (one per template that renders text) and the seeded draw."""

    def __init__(self, templates: Sequence[str] | None, records: Sequence[dict]):
        self.templates = [Template.parse(t) for t in (templates or [])]
        for template in self.templates:
            for name in template.fields:
                if not any(has_field(r, name) for r in records):
                    raise InputError(
                        f"caption template {template.text!r}: no record has the field {name!r}")
        # per template field, the records that give it no text: their captions leave it out
        self.field_gaps: dict[str, int] = {name: sum(not value_text(get_field_or_none(r, name)) for r in records)
                                           for template in self.templates for name in template.fields}
        self.options: list[list[str]] = [self._options(r) for r in records]

    def _options(self, record: dict) -> list[str]:
        rendered = [t.render(record) for t in self.templates]
        options = list(dict.fromkeys(c for c in rendered if c))
        if not options:
            fallback = default_caption(record)
            options = [fallback] if fallback else []
        return options

    def first(self, index: int) -> str:
        """The deterministic caption (first template that renders): evaluation uses it."""
        options = self.options[index]
        return options[0] if options else ""

    def draw(self, indices: Iterable[int], rng: np.random.Generator) -> list[str]:
        """One caption per record index, a random template each time."""
        out = []
        for index in indices:
            options = self.options[index]
            choice = int(rng.integers(len(options))) if len(options) > 1 else 0
            out.append(options[choice] if options else "")
        return out

    def report(self, count_tokens, context_length: int = 77) -> CaptionReport:
        texts = list(dict.fromkeys(c for options in self.options for c in options))
        counts = count_tokens(texts) if texts else []
        return CaptionReport(
            captions=len(texts),
            truncated=sum(1 for c in counts if c > context_length),
            max_tokens=max(counts, default=0),
            empty_records=sum(1 for options in self.options if not options),
        )
