"""records: reading JSON / JSON Lines / CSV, dotted fields, URL field detection, ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_clip.errors import InputError
from mlx_clip.data.record_ids import record_id
from mlx_clip.data.records import MISSING, get_field, load_records, read_records
from mlx_clip.data.url_field import detect_url_field

RECORDS = [
    {"id": 1, "type": "coin", "image_url": "https://example.org/1.jpg"},
    {"id": 2, "type": "vase", "image_url": "https://example.org/2.jpg"},
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name, text",
    [
        ("array.json", json.dumps(RECORDS, indent=2)),
        ("wrapped.json", json.dumps({"count": 2, "objects": RECORDS, "meta": {"v": 1}})),
        ("lines.jsonl", "\n".join(json.dumps(r) for r in RECORDS) + "\n\n"),
        ("lines-named.json", "\n".join(json.dumps(r) for r in RECORDS)),  # content wins
        ("table.csv", "id,type,image_url\n1,coin,https://example.org/1.jpg\n"
                      "2,vase,https://example.org/2.jpg\n"),
        ("table.txt", "id;type;image_url\n1;coin;https://example.org/1.jpg\n"
                      "2;vase;https://example.org/2.jpg\n"),
    ],
)
def test_formats_are_detected_from_content(tmp_path, name, text):
    records = read_records(write(tmp_path, name, text))
    assert [str(r["id"]) for r in records] == ["1", "2"]
    assert [r["image_url"] for r in records] == [r["image_url"] for r in RECORDS]


def test_locations_name_lines_and_records(tmp_path):
    jsonl = load_records(write(tmp_path, "a.jsonl", '\n{"a": 1}\n\n{"a": 2}\n'))
    assert jsonl.locations == ["line 2", "line 4"]
    wrapped = load_records(write(tmp_path, "b.json", json.dumps({"objects": RECORDS})))
    assert wrapped.where(1) == f"{tmp_path / 'b.json'}: key 'objects': record 2"


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("empty.json", "  \n", "empty.json: file is empty"),
        ("bad.jsonl", '{"a": 1}\n{"a": 2,}\n', "bad.jsonl: line 2: invalid JSON"),
        ("bad.json", '[{"a": 1},\n {"a": }]', "bad.json: line 2 column 8: invalid JSON"),
        ("ragged.csv", "id,url\n1,http://x/1.jpg\n2,http://x/2.jpg,extra\n",
         "ragged.csv: line 3: row has 3 fields, the header has 2"),
        ("short.csv", "id,url,type\n1,http://x/1.jpg\n", "short.csv: line 2: row has 2 fields"),
        ("dicts.json", json.dumps({"a": {"url": "x"}, "b": {"url": "y"}}),
         "dicts.json: the JSON object maps keys to objects (a dict of dicts)"),
        ("two.json", json.dumps({"objects": RECORDS, "people": RECORDS}),
         "two.json: the JSON object holds several lists of records ('objects', 'people')"),
        ("scalars.json", "[1, 2]", "scalars.json: record 1: expected a JSON object, got a number"),
        ("arrayline.jsonl", '{"a": 1}\n[1]\n', "arrayline.jsonl: line 2: expected a JSON object"),
        ("none.json", "[]", "none.json: no records found"),
    ],
)
def test_malformed_input_gives_one_clear_line(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    with pytest.raises(InputError) as error:
        read_records(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(path.parent) + "/" + expected), message


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_records(tmp_path / "nope.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8"):
        read_records(tmp_path / "bin.json")


def test_a_records_file_that_would_never_end_or_not_fit_is_refused_before_reading(tmp_path, monkeypatch):
    """Someone else's records path: a FIFO would block forever and /dev/zero fill the memory, so
    both are refused from fstat; a file over the cap is refused from its size, before a byte is read."""
    import os
    from mlx_clip import io as io_module
    from mlx_clip.data import records

    fifo = tmp_path / "records.json"
    os.mkfifo(fifo)
    for special in (fifo, "/dev/zero"):
        with pytest.raises(InputError, match=r": not a regular file \(a FIFO or device\)"):
            read_records(special)
    with pytest.raises(InputError, match=r": is a folder, not a records file"):
        read_records(tmp_path)
    big = tmp_path / "big.json"
    big.write_text(json.dumps([{"id": i, "title": "x" * 50} for i in range(40)]))
    monkeypatch.setattr(records, "MAX_RECORDS_BYTES", 1 << 10)
    opened = io_module.open_regular  # what io.read_capped, the records' bounded read, opens with

    class Unread:  # the opened file, whose bytes the size check must not reach
        def __init__(self, path):
            self.handle = opened(path)

        def fileno(self):
            return self.handle.fileno()

        def read(self, *args):
            pytest.fail("read past the size check")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(io_module, "open_regular", Unread)
    with pytest.raises(InputError, match=r"big.json: 0.0 GiB is more than the 0 GiB a records file may have"):
        read_records(big)


def test_get_field_dotted_paths():
    record = {
        "media": [{"url": "https://x/a.jpg"}, {"url": "https://x/b.jpg"}],
        "findspot": {"lat": 51.5, "lon": -0.1},
        "dc.title": "literal dotted key",
        "empty": None,
    }
    assert get_field(record, "media.0.url") == "https://x/a.jpg"
    assert get_field(record, "media.1.url") == "https://x/b.jpg"
    assert get_field(record, "findspot.lat") == 51.5
    assert get_field(record, "dc.title") == "literal dotted key"
    assert get_field(record, "empty") is None
    assert get_field(record, "media.5.url", "default") == "default"
    assert get_field(record, "findspot.alt", MISSING) is MISSING
    with pytest.raises(KeyError):
        get_field(record, "nope")


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"id": 1, "image_url": "https://x/1.jpg", "url": "https://museum/obj/1"}, "image_url"),
        ({"id": 1, "imageUrl": "https://x/1"}, "imageUrl"),
        ({"url": "https://museum/obj/1", "primaryImage": "https://x/1.jpg"}, "primaryImage"),
        ({"link": "https://museum/obj/1", "media": [{"url": "https://x/1.jpg"}]}, "media.0.url"),
        ({"object": "coin", "iiif": {"full": "https://iiif.x/1/full/675,/0/default.jpg"}},
         "iiif.full"),
        ({"page": "https://museum/o/1", "thumb": {"src": "https://cdn.x/1.webp"}}, "thumb.src"),
        ({"url": "https://cdn.x/img?id=1"}, "url"),
    ],
)
def test_detect_url_field(record, expected):
    assert detect_url_field([record, record]) == expected


def test_detect_url_field_error_names_the_fields():
    with pytest.raises(InputError) as error:
        detect_url_field([{"id": 1, "name": "coin"}], "records.json")
    assert str(error.value).startswith("records.json: no field holds http(s) image URLs")
    assert "id, name" in str(error.value)


def test_detect_url_field_error_names_a_field_of_local_image_paths():
    records = [{"id": i, "Title": "coin", "photo": f"scans/{i}.JPG"} for i in range(4)]
    with pytest.raises(InputError) as error:
        detect_url_field(records, "records.csv")
    assert str(error.value).endswith("field 'photo' holds local image paths: pass --path-field photo")


def test_record_id():
    assert record_id({"id": 7}, None, 3) == "7"
    assert record_id({"objectID": "A-1"}, None, 3) == "A-1"
    assert record_id({"title": "x"}, None, 3) == "#3"
    assert record_id({"inv": {"no": "X.12"}}, "inv.no", 3) == "X.12"
    with pytest.raises(KeyError):
        record_id({"title": "x"}, "inv.no", 3)
