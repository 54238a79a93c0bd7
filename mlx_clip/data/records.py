"""Read catalogue records (JSON, JSON Lines, CSV) and reach into them with dotted field paths
(each record's id: data/record_ids.py).

The format is detected from the file's content, not its extension:

- a JSON array of objects: ``[{...}, {...}]``
- a JSON object holding one list of objects: ``{"objects": [{...}, ...], "count": 2}``
- JSON Lines: one object per line
- CSV (or TSV / semicolon-separated) with a header row

Every problem raises :class:`~mlx_clip.errors.InputError` with one line naming the file, the
record or line, and the field.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import NotARegularFile, OverLimit, json_kind, jsonl_objects, read_capped

__all__ = [
    "Records",
    "load_records",
    "read_records",
    "get_field",
    "get_field_or_none",
    "has_field",
    "MISSING",
]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Pass as ``get_field(..., default=MISSING)`` to get it back for an absent field."""
_RAISE: Any = object()


@dataclass
class Records:
    """Records read from one file, with where each one came from (for error messages)."""

    path: Path
    format: str  # "json", "jsonl" or "csv"
    records: list[dict] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)  # "record 3" or "line 18", one per record

    def where(self, index: int) -> str:
        """``"records.json: record 17"``: the file and the record's place in it."""
        return f"{self.path}: {self.locations[index]}"


def read_records(path: str | os.PathLike, encoding: str | None = None) -> list[dict]:
    """Read the records in ``path`` (JSON, JSON Lines or CSV) as a list of dicts."""
    return load_records(path, encoding).records


def load_records(path: str | os.PathLike, encoding: str | None = None) -> Records:
    """Read ``path`` into :class:`Records`, detecting the format from the content.

    ``encoding`` is the file's text encoding (``--encoding``); None reads UTF-8, with or
    without a byte-order mark, so a CSV exported by Excel as "CSV UTF-8" works as it is.
    """
    path = Path(path)
    raw = _records_bytes(path)
    try:
        text = raw.decode(encoding or "utf-8").removeprefix("\ufeff")  # a byte-order mark is not content
    except UnicodeDecodeError as e:
        bad = f"byte 0x{raw[e.start]:02x} at offset {e.start}"
        if encoding is None:
            raise InputError(f"{path}: not UTF-8 text ({bad}); if it was saved by Excel on Windows, "
                             "pass --encoding cp1252") from None
        raise InputError(f"{path}: not {encoding} text ({bad}); pass the file's encoding with --encoding") from None
    except LookupError:
        raise InputError(f"--encoding {encoding}: unknown encoding (e.g. utf-8, cp1252, latin-1)") from None
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{path}: file is empty, expected JSON, JSON Lines or CSV records")
    if stripped[0] in "[{":
        result = _read_json_or_jsonl(path, text)
    else:
        result = _read_csv(path, text)
    if not result.records:
        raise InputError(f"{path}: no records found")
    for index, record in enumerate(result.records):
        if _too_deep(record):  # refused here: deeper values crash caption and report code after the download
            raise InputError(f"{result.where(index)}: nested more than {MAX_DEPTH} levels deep")
    return result


# parsed, records take 2.5x (long text fields) to 4.6x (short fields, numbers) their JSON, measured with
# tracemalloc on 72,000 museum-like and 200,000 short records: 2 GiB is already 5 to 10 GB of memory
MAX_RECORDS_BYTES = 2 << 30


def _records_bytes(path: Path) -> bytes:
    """The records file's bytes (io.read_capped), refused before any is read when it is not a
    regular file (a FIFO would block forever, /dev/zero never end) or larger than MAX_RECORDS_BYTES."""
    try:
        return read_capped(path, MAX_RECORDS_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a records file") from None
    except NotARegularFile:
        raise InputError(f"{path}: not a regular file (a FIFO or device); name a JSON, JSON Lines or CSV file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    except OverLimit as over:
        raise InputError(f"{path}: {over.size / 2**30:.1f} GiB is more than the {MAX_RECORDS_BYTES >> 30} GiB a "
                         "records file may have (2.5 to 5 times that in memory once parsed); split it into parts") from None


MAX_DEPTH = 64  # real catalogue records nest a few levels; 800 crashed later steps (issue 24)


def _too_deep(record: dict) -> bool:
    """Whether lists/objects in `record` nest more than MAX_DEPTH levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _read_json_or_jsonl(path: Path, text: str) -> Records:
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError(f"{path}: JSON nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as whole_error:
        first_line = text.lstrip().split("\n", 1)[0]
        try:
            first = json.loads(first_line)
        except (json.JSONDecodeError, RecursionError):
            first = None
        if isinstance(first, dict):
            return _read_jsonl(path, text)
        raise InputError(
            f"{path}: line {whole_error.lineno} column {whole_error.colno}: "
            f"invalid JSON ({whole_error.msg})"
        ) from None
    if isinstance(data, list):
        return _records_from_list(path, data, "record {}", None)
    if isinstance(data, dict):
        return _records_from_object(path, data)
    raise InputError(f"{path}: expected a JSON array or object of records, got {json_kind(data)}")


def _read_jsonl(path: Path, text: str) -> Records:
    result = Records(path=path, format="jsonl")
    for line_number, record in jsonl_objects(text.split("\n"), path):
        result.records.append(record)
        result.locations.append(f"line {line_number}")
    return result


def _records_from_list(path: Path, items: list, location: str, key: str | None) -> Records:
    result = Records(path=path, format="json")
    prefix = f"key '{key}': " if key else ""
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise InputError(
                f"{path}: {prefix}record {number}: expected a JSON object, got {json_kind(item)}"
            )
        result.records.append(item)
        result.locations.append(prefix + location.format(number))
    return result


def _records_from_object(path: Path, data: dict) -> Records:
    lists = [
        key
        for key, value in data.items()
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
    ]
    if len(lists) == 1:
        return _records_from_list(path, data[lists[0]], "record {}", lists[0])
    if len(lists) > 1:
        names = ", ".join(f"'{k}'" for k in lists)
        raise InputError(
            f"{path}: the JSON object holds several lists of records ({names}); "
            "keep one, or save the records as a JSON array"
        )
    if data and all(isinstance(v, dict) for v in data.values()):
        raise InputError(
            f"{path}: the JSON object maps keys to objects (a dict of dicts); expected a list "
            'of records, e.g. [{...}, ...] or {"objects": [{...}, ...]}'
        )
    if any(isinstance(v, list) for v in data.values()):
        raise InputError(f"{path}: the JSON object holds no list of record objects")
    # A lone object: one record (a one-line JSON Lines file).
    return Records(path=path, format="jsonl", records=[data], locations=["line 1"])


def _read_csv(path: Path, text: str) -> Records:
    sample = text[:16384]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    reader = csv.reader(text.splitlines(keepends=True), dialect)
    result = Records(path=path, format="csv")
    try:
        header = next(reader)
    except StopIteration:  # pragma: no cover - empty text is caught earlier
        return result
    header = [name.strip() for name in header]
    if not any(header):
        raise InputError(f"{path}: line 1: the CSV header row is empty")
    for number, name in enumerate(header, start=1):
        if not name:
            raise InputError(f"{path}: line 1: CSV column {number} has no name")
    duplicates = sorted({n for n in header if header.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}: line 1: CSV column '{duplicates[0]}' appears more than once")
    try:
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InputError(
                    f"{path}: line {reader.line_num}: row has {len(row)} fields, the header "
                    f"has {len(header)} ('{header[min(len(row), len(header)) - 1]}' is the last "
                    "column they share)"
                )
            result.records.append(dict(zip(header, row)))
            result.locations.append(f"line {reader.line_num}")
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    return result



def get_field(record: Any, path: str, default: Any = _RAISE) -> Any:
    """The value at a dotted ``path`` such as ``"media.0.url"`` or ``"findspot.lat"``.

    A key that itself contains dots (a CSV column named ``"findspot.lat"``) is matched first.
    List items are addressed by their index. Returns ``default`` when absent, and raises
    ``KeyError(path)`` if no default is given.
    """
    if isinstance(record, dict) and path in record:
        return record[path]
    value = record
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(value, dict):
            rest = ".".join(parts[i:])
            if rest in value:
                return value[rest]
            if part not in value:
                break
            value = value[part]
        elif isinstance(value, list) and re.fullmatch(r"-?\d+", part):
            index = int(part)
            if not -len(value) <= index < len(value):
                break
            value = value[index]
        else:
            break
    else:
        return value
    if default is _RAISE:
        raise KeyError(path)
    return default


def get_field_or_none(record: Any, path: str) -> Any:
    """``get_field`` that reads an absent field as None, as captions, labels and strata do (a
    record without a period simply has no period in its caption)."""
    return get_field(record, path, None)


def has_field(record: Any, path: str) -> bool:
    """Whether ``record`` has a value (possibly null) at the dotted ``path``."""
    return get_field(record, path, MISSING) is not MISSING
