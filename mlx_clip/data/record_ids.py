"""A record's id: the one rule for fetch's image file names and failure lines, the manifest, the
training batches, split.json and an index's rows; and the check that no id names two records.

A catalogue exported one row per photo repeats the object's number on each photo's row. Found
by name (no --id-field), such a field names no record: the records are then named by their
position and the console says to pass the field as --group-field, which keeps an object's
photos together. Given as --id-field, a repeated id is refused in one line.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Sequence

from ..errors import InputError
from .records import Records, get_field

__all__ = ["ID_FIELD_NAMES", "MANIFEST_ID", "BY_POSITION", "record_id", "manifest_record_id", "has_own_id",
           "record_ids", "check_unique_ids", "choose_id_field"]

ID_FIELD_NAMES = ("id", "ID", "Id", "record_id", "_id", "identifier", "objectID", "objectId", "object_id",
                  "objectNumber", "accession_number", "uuid")
MANIFEST_ID = "record_id"
"""The key fetch writes each record's id under in manifest.jsonl (a record's own ``record_id``
moves to ``record_record_id``), so training reads back the id fetch named the image after."""


BY_POSITION = "#"
"""The id rule that names each record by its position ("#17"), chosen when an id-like field repeats."""


def record_id(record: dict, id_field: str | None, index: int) -> str:
    """The record's identifier as a string: the one rule for fetch's image file names and
    failures lines, the manifest, the training batches and split.json.

    With ``id_field`` it is that field (a missing or empty value raises ``KeyError``); without
    it, the first top-level ``id``-like field (``ID_FIELD_NAMES``) if present, and otherwise
    ``"#<index>"``, the record's position in its file.
    """
    if id_field == BY_POSITION:
        return f"#{index}"
    if id_field:
        value = get_field(record, id_field)
        if value is None or value == "":
            raise KeyError(id_field)
        return str(value)
    name = id_like_field(record)
    return str(record[name]) if name else f"#{index}"


def id_like_field(record: dict) -> str | None:
    """The first top-level field of ID_FIELD_NAMES holding a scalar: what names a record without --id-field."""
    for name in ID_FIELD_NAMES:
        value = record.get(name)
        if value is not None and value != "" and not isinstance(value, (dict, list)):
            return name
    return None


def manifest_record_id(entry: dict, id_field: str | None, index: int) -> str:
    """The id of a manifest entry: ``id_field`` when given, else the id fetch wrote
    (``MANIFEST_ID``), else :func:`record_id`'s rule (a manifest fetch did not write)."""
    if not id_field and entry.get(MANIFEST_ID) not in (None, ""):
        return str(entry[MANIFEST_ID])
    return record_id(entry, id_field, index)


def repeated_id(ids: Iterable[str | None]) -> tuple[str, int, int] | None:
    """(id, first position, repeat position) of the first id on two records; None: each names one
    (a None id, a record without one, is left to its own check)."""
    seen: dict[str, int] = {}
    for position, rid in enumerate(ids):
        if rid is not None and seen.setdefault(rid, position) != position:
            return rid, seen[rid], position
    return None


def check_unique_ids(ids: Iterable[str | None], file: str | os.PathLike, places: Sequence[str]) -> None:
    """Refuse one id on two records (an object's id on each of its photos put them on both sides
    of the split and made split.json ambiguous). `places[i]` says where record i is ("record 3")."""
    found = repeated_id(ids)
    if found:
        rid, first, position = found
        raise InputError(
            f"{file}: {places[position]}: record id {rid!r} is also {places[first]}'s; each record needs "
            "its own id: pass --id-field with a field unique to each record (several images of one "
            "object: give the object's field to --group-field)")


def record_ids(records: Records, id_field: str | None) -> list[str | None]:
    """Every record's id (None where id_field is missing: fetch says so for a sampled record)."""
    out: list[str | None] = []
    for index, record in enumerate(records.records):
        try:
            out.append(record_id(record, id_field, index))
        except KeyError:
            out.append(None)
    return out


def choose_id_field(records: Records, id_field: str | None) -> tuple[str | None, list[str | None], str | None]:
    """The id rule for these records, every record's id under it (record_ids), and the line that
    says so when an id-like field found by name repeats (one row per photo): then BY_POSITION. A
    repeated --id-field is refused."""
    ids = record_ids(records, id_field)
    found = repeated_id(ids)
    if found is None or id_field is not None or not has_own_id(found[0]):
        check_unique_ids(ids, records.path, records.locations)
        return id_field, ids, None
    rid, first, position = found
    field = id_like_field(records.records[position])
    return BY_POSITION, record_ids(records, BY_POSITION), (
        f"{records.path}: '{field}' repeats ({records.locations[position]} is also {records.locations[first]}'s "
        f"{rid!r}), so it names no record: records are named by their position; --group-field {field} keeps "
        "each object's photos together")


def has_own_id(record_identifier: str) -> bool:
    """Whether ``record_id`` came from the record itself rather than its position."""
    return not re.fullmatch(r"#\d+", record_identifier)
