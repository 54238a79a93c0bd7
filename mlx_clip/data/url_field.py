"""Which field of the records holds the image URLs, when `--url-field` does not say."""

from __future__ import annotations

import re
from typing import Any, Sequence

from ..errors import InputError
from .records import get_field

_URL_FIELD_NAMES = [
    "image_url",
    "imageUrl",
    "image_uri",
    "imageURL",
    "primaryImage",
    "image",
    "img",
    "img_url",
    "media.0.url",
    "images.0.url",
    "iiif_url",
    "iiif",
    "thumbnail_url",
    "thumbnailUrl",
    "thumbnail",
    "primaryImageSmall",
    "url",
]
_IMAGE_URL = re.compile(
    r"\.(jpe?g|png|gif|webp|tiff?|bmp)(\?.*)?$|/full/[^/]+/[^/]+/(default|color|gray|native)\.\w+",
    re.IGNORECASE,
)


def _is_http_url(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def _candidate_paths(record: dict) -> list[str]:
    """Top-level keys, plus one level into nested objects and the first item of lists."""
    paths = []
    for key, value in record.items():
        paths.append(str(key))
        if isinstance(value, list) and value:
            value, key = value[0], f"{key}.0"
            paths.append(key)
        if isinstance(value, dict):
            paths.extend(f"{key}.{sub}" for sub in value)
    return paths


def detect_url_field(records: Sequence[dict], source: str = "records") -> str:
    """The dotted path of the field that holds image URLs, guessed from the first records.

    Fields whose values look like image URLs (an image extension or a IIIF
    ``.../full/.../0/default.jpg`` link) win; among those, and otherwise, common names such as
    ``image_url``, ``primaryImage``, ``media.0.url`` or ``url`` decide. Raises
    :class:`InputError` naming ``source`` when no field holds http(s) URLs.
    """
    probe = list(records[:200])
    paths: dict[str, None] = {}
    for record in probe:
        for path in _candidate_paths(record):
            paths.setdefault(path, None)
    fields = ", ".join(p for p in list(paths)[:12] if "." not in p)
    for name in _URL_FIELD_NAMES:
        paths.setdefault(name, None)
    best: tuple | None = None
    best_path = None
    for path in paths:
        values = [get_field(r, path, None) for r in probe]
        urls = [v for v in values if _is_http_url(v)]
        if not urls or len(urls) * 2 < len(probe):
            continue
        image_like = sum(1 for u in urls if _IMAGE_URL.search(u.strip())) * 2 >= len(urls)
        rank = _URL_FIELD_NAMES.index(path) if path in _URL_FIELD_NAMES else len(_URL_FIELD_NAMES)
        score = (not image_like, rank, -len(urls))
        if best is None or score < best:
            best, best_path = score, path
    if best_path is None:
        local = _local_image_field(probe, paths)
        hint = (f"field '{local}' holds local image paths: pass --path-field {local}" if local else
                "name it with --url-field, or use --path-field for local images")
        raise InputError(f"{source}: no field holds http(s) image URLs (fields: {fields}); {hint}")
    return best_path


def _local_image_field(probe: Sequence[dict], paths: dict[str, None]) -> str | None:
    """The first field whose values mostly look like image file names (not URLs): the hint for
    records that point at images on disk."""
    for path in paths:
        values = [get_field(r, path, None) for r in probe]
        names = [v for v in values if isinstance(v, str) and not _is_http_url(v) and _IMAGE_URL.search(v.strip())]
        if names and len(names) * 2 >= len(probe):
            return path
    return None
