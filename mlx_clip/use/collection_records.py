"""Every record of a collection, with its image on disk: a records file is fetched whole (fetch's
own rules, into the index's images folder), a fetch.py manifest or folder is read as it is, and
an ImageFolder's metadata is read with `file_name` as the local path.

Each record becomes an `Entry`: its id (fetch's record id rule), the absolute path of the image
file its vector comes from, the identity of that image (the original's sha256 and the stored
file's size), and the metadata row the index stores (every catalogue field, plus `record_id`,
`image_path`, `sha256`, `title` and, with a link template, `record_url`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from ..data.dataset import is_manifest, read_manifest
from ..data.fetch_config import FAILURES_NAME, MANIFEST_KEYS, MANIFEST_NAME, FetchConfig
from ..data.image_files import file_sha256
from ..data.imagefolder import FILE_COLUMN, metadata_file
from ..data.records import get_field
from ..errors import InputError
from .record_link import check_link_template, record_link

TITLE_FIELDS = ("title", "name", "caption", "label", "description")
"""Fields tried, in order, for a record's title when --title-field is not given."""


@dataclass(frozen=True)
class Entry:
    record_id: str
    image_path: Path  # absolute
    image_identity: str  # the original's sha256 and the stored file's size: a new file re-embeds
    title: str
    metadata: dict[str, Any]


def collection_manifest(data: Path, fetch: FetchConfig, log: Callable[[str], Any],
                        check: Callable[[list[dict], Path], None] = lambda records, where: None
                        ) -> tuple[Path, Path | None]:
    """(manifest of every usable record, fetch's failures file or None): fetching what is missing.
    `check(records, file)` sees a records file's records before a single image is fetched."""
    from ..data.fetcher import fetch_records
    from ..data.records import load_records

    if data.is_dir():
        if is_manifest(data / MANIFEST_NAME) and not fetch.path_field:
            return data / MANIFEST_NAME, _failures_beside(data / MANIFEST_NAME)
        records = metadata_file(data)
        fetch = replace(fetch, path_field=fetch.path_field or FILE_COLUMN)
    elif not data.is_file():
        raise InputError(f"{data}: records file not found (a records file, a fetch.py manifest or an ImageFolder)")
    elif is_manifest(data) and not fetch.path_field:
        return data, _failures_beside(data)
    else:
        records = data
    if any(Path(records).resolve() == written.resolve() for written in fetch.list_paths()):
        raise InputError(f"{records}: is the list the fetch would rewrite; pass another --images")
    loaded = load_records(records, fetch.encoding)
    check(loaded.records, loaded.path)
    log(f"fetching every record's image from {records} into {fetch.out} (files already there are kept)")
    summary = fetch_records(records, fetch, sample=None, log=log, loaded=loaded)
    log(str(summary))
    return summary.manifest_path, summary.failures_path


def _failures_beside(manifest: Path) -> Path | None:
    """The fetch's failures list written with `manifest` (index-manifest.jsonl: index-failures.jsonl)."""
    prefix = manifest.name[:-len(MANIFEST_NAME)] if manifest.name.endswith(MANIFEST_NAME) else ""
    path = manifest.parent / (prefix + FAILURES_NAME)
    return path if path.is_file() else None


@dataclass(frozen=True)
class EntryFields:
    """The fields index.py is told to read from every record (each named by a flag)."""

    title_field: str | None = None
    link_template: str | None = None
    label_field: str | None = None

    def check(self, records: list[dict], where: Path) -> None:
        """A field these flags name that no record in `where` has is one line: a typo is said
        before 72,000 images are fetched, not after."""
        named = [("--title-field", self.title_field), ("--label-field", self.label_field)]
        named += [("--link-template field", name) for name in (check_link_template(self.link_template)
                                                          if self.link_template else [])]
        for flag, name in named:
            if name and all(get_field(r, name, None) in (None, "") for r in records):
                raise InputError(f"{where}: {flag} {name!r}: no record has this field")


def read_entries(manifest: Path, fields: EntryFields, id_field: str | None = None) -> list[Entry]:
    """The manifest's records as entries; a field the flags name that no record has is one line."""
    items = read_manifest(manifest, id_field)
    records = [item.record for item in items]
    fields.check(records, manifest)
    title_field, link_template = fields.title_field, fields.link_template
    title_field = title_field or next((f for f in TITLE_FIELDS if any(f in r for r in records)), None)
    entries = []
    for item in items:  # read_manifest refused two records with one id
        record, path = item.record, item.image_path.resolve()
        title = _text(get_field(record, title_field, None)) if title_field else ""
        metadata = {k: v for k, v in record.items() if k not in MANIFEST_KEYS}
        metadata.update(record_id=item.record_id, image_path=str(path), title=title or item.record_id)
        sha = record.get("sha256")
        if sha:
            metadata["sha256"] = sha
        if link_template:
            url = record_link(link_template, record)
            if url:  # a record without the template's field has no link
                metadata["record_url"] = url
        identity = f"{sha or ''}:{record.get('width', '')}x{record.get('height', '')}"
        entries.append(Entry(item.record_id, path, identity, title or item.record_id, metadata))
    return entries


def fill_missing_identities(entries: list[Entry], hash_file: Callable[[Path], str] | None = None) -> list[Entry]:
    """Entries of a manifest not written by fetch (no sha256) get the digest of their file's bytes."""
    hash_file = hash_file or file_sha256
    out = []
    for entry in entries:
        if entry.image_identity.startswith(":"):
            try:
                entry = replace(entry, image_identity=hash_file(entry.image_path) + entry.image_identity)
            except OSError:
                pass  # the decode lists the file as unreadable
        out.append(entry)
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)


def stale_ids(stored: Iterable[str], current: Iterable[str]) -> list[str]:
    """Ids in the collection that the records no longer have."""
    keep = set(current)
    return [rid for rid in stored if rid not in keep]
