"""One owner for a record's id (mlx_clip.data.records): the id a training batch carries is the id
fetch wrote in its manifest, named the image file after and wrote in failures.jsonl, and the
id split.json lists."""

import json
from pathlib import Path

import numpy as np
import pytest

from fetch_server import FetchServer, make_image
from mlx_clip.data.captions import CaptionBuilder
from mlx_clip.data.dataset import read_manifest, split
from mlx_clip.data.fetch_config import FetchConfig
from mlx_clip.data.fetcher import fetch_records
from mlx_clip.data.image_files import image_stem
from mlx_clip.data.record_ids import record_id
from mlx_clip.data.records import get_field, get_field_or_none
from mlx_clip.data.stream import AugmentConfig, TrainStream
from mlx_clip.errors import InputError
from mlx_clip.models.preprocess import ImageProcessor


@pytest.fixture(scope="module")
def server():
    server = FetchServer().start()
    yield server
    server.stop()


def _records(server) -> list[dict]:
    for k in range(6):
        server.images[f"r{k}"] = make_image((40 * k, 120, 200 - 30 * k), "PNG")
    return [
        {"id": "plain", "title": "a", "image_url": server.url("/img/r0")},
        {"ID": "upper", "title": "b", "image_url": server.url("/img/r1")},  # fetch's key, once not the batch's
        {"objectNumber": "BM.12", "title": "c", "image_url": server.url("/img/r2")},  # the batch's, not fetch's
        {"title": "no id", "image_url": server.url("/img/r3")},  # fetch: "#3"; the batch: once the sha256
        {"id": "own", "record_id": "other", "title": "e", "image_url": server.url("/img/r4")},
        {"title": "also no id", "image_url": server.url("/img/r5")},
        {"id": "gone", "title": "f", "image_url": server.url("/missing/x")},
        {"title": "gone, no id", "image_url": server.url("/missing/y")},
    ]


def _fetch(server, tmp_path, records, **config) -> Path:
    (tmp_path / "records.json").write_text(json.dumps(records))
    summary = fetch_records(tmp_path / "records.json", FetchConfig(
        out=tmp_path / "out", progress=False, retries=0, connect_timeout=2, read_timeout=2, **config))
    return Path(summary.manifest_path)


def test_batch_ids_are_fetchs_ids_and_name_the_image_files(server, tmp_path):
    records = _records(server)
    manifest_path = _fetch(server, tmp_path, records)
    manifest = [json.loads(line) for line in manifest_path.read_text().splitlines()]
    expected = ["plain", "upper", "BM.12", "#3", "own", "#5"]
    assert [entry["record_id"] for entry in manifest] == expected
    assert manifest[4]["record_record_id"] == "other"  # the record's own field is kept aside
    for entry, record in zip(manifest, records):  # the file name hashes the id (and URL) when the record has one
        own = not entry["record_id"].startswith("#")
        key = f"{entry['record_id']}\n{record['image_url']}" if own else record["image_url"]
        assert Path(entry["image_path"]).stem == image_stem(key)
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failures] == ["gone", "#7"]

    items = read_manifest(manifest_path)
    assert [item.record_id for item in items] == expected
    captions = CaptionBuilder(["{title}"], [item.record for item in items])
    stream = TrainStream(items, captions, lambda texts: np.zeros((len(texts), 4), np.int32),
                         ImageProcessor.from_dict({}, 16), 16, 4, seed=1, augment=AugmentConfig(), threads=1)
    seen = [rid for batch in stream.epoch(1) for rid in batch["record_id"]]
    assert sorted(seen) == sorted(expected)
    parts = split(items, 0.34, seed=0)
    ids = parts.ids()
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == sorted(expected)


def test_an_id_field_names_the_files_and_the_batches(server, tmp_path):
    _records(server)  # serves /img/r0 ... (a test alone on its worker has no other to do it)
    records = [{"id": k, "inv": {"no": f"X.{k}"}, "title": "t", "image_url": server.url(f"/img/r{k}")}
               for k in range(3)]
    manifest_path = _fetch(server, tmp_path, records, id_field="inv.no")
    # read back with or without --id-field: fetch's id, not the record's "id"
    assert [i.record_id for i in read_manifest(manifest_path)] == ["X.0", "X.1", "X.2"]
    assert [i.record_id for i in read_manifest(manifest_path, "inv.no")] == ["X.0", "X.1", "X.2"]
    with pytest.raises(InputError, match=r"manifest.jsonl: line 1: field 'nope' is missing or empty"):
        read_manifest(manifest_path, "nope")


def test_a_hand_written_manifest_uses_the_same_rule(tmp_path):
    rows = [{"objectNumber": "A", "image_path": "a.png"}, {"title": "x", "image_path": "b.png"}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [i.record_id for i in read_manifest(tmp_path / "manifest.jsonl")] == [
        record_id(rows[0], None, 0), record_id(rows[1], None, 1)] == ["A", "#1"]


def test_one_get_field_raising_or_reading_none():
    record = {"a": {"b": [1, 2]}, "c.d": 3}
    assert get_field(record, "a.b.1") == get_field_or_none(record, "a.b.1") == 2
    assert get_field(record, "c.d") == 3
    assert get_field_or_none(record, "a.x") is None
    with pytest.raises(KeyError):
        get_field(record, "a.x")


def test_one_id_on_two_records_is_refused_before_any_download_and_in_a_manifest(server, tmp_path):
    """A catalogue with one row per photo repeats the object's id: taken as the record id, it put
    one object's photos on both sides of the split and made split.json ambiguous. fetch (and so
    finetune and index.py) refuses it before a request, naming both records and --group-field;
    read_manifest refuses a manifest that holds it."""
    server.images["p0"] = make_image((10, 20, 30), "PNG")
    records = [{"object": "OBJ-1", "image_url": server.url("/img/p0")},
               {"object": "OBJ-2", "image_url": server.url("/img/p0")},
               {"object": "OBJ-1", "image_url": server.url("/img/p0")}]
    with pytest.raises(InputError, match=r"records.json: record 3: record id 'OBJ-1' is also record 1's; "
                                         r".*--id-field.*--group-field"):
        _fetch(server, tmp_path, records, id_field="object")
    assert not (tmp_path / "out").exists() and server.count("/img/p0") == 0  # nothing requested or made
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"record_id": rid, "image_path": "a.png", "sha256": "0"}) + "\n"
                                for rid in ("a", "b", "a")))
    with pytest.raises(InputError, match=r"manifest.jsonl: line 3: record id 'a' is also line 1's"):
        read_manifest(manifest)
    manifest.write_text("".join(json.dumps({"record_id": rid, "image_path": "a.png", "sha256": "0"}) + "\n"
                                for rid in ("a", "b", "c")))
    assert [item.record_id for item in read_manifest(manifest)] == ["a", "b", "c"]


def test_an_id_like_field_that_repeats_names_records_by_position_and_says_to_group(server, tmp_path):
    """A museum's export has one row per photo, each with the object's objectNumber and no field of
    its own: found by name, objectNumber names no record, so records are named by their position
    (and the console says --group-field objectNumber keeps each object's photos together)."""
    for k in range(3):
        server.images[f"q{k}"] = make_image((60 * k, 90, 30), "PNG")
    records = [{"objectNumber": "BM.1", "image_url": server.url("/img/q0")},
               {"objectNumber": "BM.1", "image_url": server.url("/img/q1")},
               {"objectNumber": "BM.2", "image_url": server.url("/img/q2")}]
    (tmp_path / "records.json").write_text(json.dumps(records))
    said = []
    summary = fetch_records(tmp_path / "records.json", FetchConfig(out=tmp_path / "out", progress=False, retries=0),
                            log=said.append)
    assert ("records.json: 'objectNumber' repeats (record 2 is also record 1's 'BM.1'), so it names no record: "
            "records are named by their position; --group-field objectNumber keeps each object's photos "
            "together") in "\n".join(said)
    entries = [item.record for item in read_manifest(summary.manifest_path)]
    assert [e["record_id"] for e in entries] == ["#0", "#1", "#2"]
    assert [e["objectNumber"] for e in entries] == ["BM.1", "BM.1", "BM.2"]  # the field stays, for --group-field
    assert len({e["image_path"] for e in entries}) == 3
