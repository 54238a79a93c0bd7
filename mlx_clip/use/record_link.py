"""A record's own page from a link template (`https://opencontext.org/media/{uuid}`): the one
owner, used by index.py (stored as the record's `record_url`) and by the search page (its
`--link-template` overrides what the index stored).

A field may be dotted (`{media.0.id}`); its value is URL-quoted (slashes kept, so an ark or a
path stays readable). A record that lacks a field the template names simply has no link: one
untyped record never stops an index of 72,000. Only http(s) templates are accepted, so a page
never links `javascript:`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

from ..data.records import get_field
from ..errors import InputError

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def check_link_template(template: str) -> list[str]:
    """The field names `template` fills; one line for a template that cannot make a link."""
    stripped = PLACEHOLDER.sub("", template)
    if "{" in stripped or "}" in stripped:
        raise InputError(f"--link-template {template!r}: unbalanced braces")
    names = PLACEHOLDER.findall(template)
    if not names or not all(name.strip() for name in names):
        raise InputError(f"--link-template {template!r} names no field in braces, e.g. {{uuid}}")
    if urlsplit(template).scheme not in ("http", "https"):
        raise InputError(f"--link-template {template!r} must start with http:// or https://")
    return names


def record_link(template: str, record: dict[str, Any]) -> str | None:
    """The record's URL, or None when a field the template names is missing or empty."""
    values = {}
    for name in check_link_template(template):
        value = get_field(record, name, None)
        if value in (None, "") or isinstance(value, (dict, list)):
            return None
        values[name] = quote(str(value), safe="/")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
