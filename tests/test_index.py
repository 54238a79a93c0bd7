"""index.py: every record of a collection embedded into llm's own schema, resumable, failures
listed, models never mixed; `llm similar` (the real CLI) answers with the records' fields."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mlx_clip
from mlx_clip.index import main
from mlx_clip.data.decode_threads import ordered_map
from mlx_clip.use.embed_collection import failures_path
from mlx_clip.use.store import IndexFile
from test_llm_plugin import LLM, plugin_site  # noqa: F401  (the fixture, and llm run in a subprocess)

EMOJI = Path(mlx_clip.__file__).parent / "demo" / "emoji"
PICKED = ("+1", "100", "8ball", "apple", "bike", "cat")


def write_records(folder: Path, ids=PICKED, extra: list[dict] | None = None) -> Path:
    """A few emoji records with their images copied beside them (path_field image_path)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for line in (EMOJI / "records.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["id"] in ids:
            shutil.copy(EMOJI / record["image_path"], folder / record["image_path"])
            rows.append(record)
    assert len(rows) == len(ids)
    rows += extra or []
    path = folder / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "llm"
    path.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(path))
    return path


def index(records: Path, model: Path, out: Path, *more: str) -> int:
    return main(["--model", str(model), "--data", str(records), "--path-field", "image_path", "--out", str(out),
                 "--no-progress", "--batch-size", "4", *more])


def rows(db: Path, collection: str) -> dict[str, tuple[bytes, dict]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT e.id, e.embedding, e.metadata FROM embeddings e JOIN collections c "
                             "ON c.id = e.collection_id WHERE c.name = ?", (collection,)).fetchall()
    return {rid: (blob, json.loads(meta)) for rid, blob, meta in found}


def embedded_count(output: str) -> int:
    line = next(line for line in output.splitlines() if line.strip().startswith("embedded"))
    return int(line.split()[1].replace(",", ""))


def test_llm_similar_finds_the_records_with_their_fields(tmp_path, tiny_hf, user_dir, plugin_site):  # noqa: F811
    records = write_records(tmp_path / "data")
    db = tmp_path / "out" / "finds.db"
    assert index(records, tiny_hf, db, "--collection", "finds", "--link-template",
                 "https://example.org/emoji/{unicode}") == 0
    llm = LLM(user_dir, plugin_site)
    # a picture of the collection, as a query, finds its own record first: same model, same vectors
    cat = tmp_path / "data" / "images" / "1f431.png"
    assert cat.is_file()
    result = llm("similar", "finds", "-d", db, "-i", cat, "--binary", "-n", "2")
    best = [json.loads(line) for line in result.stdout.splitlines()]
    assert best[0]["id"] == "cat" and best[0]["score"] == pytest.approx(1.0, abs=1e-4)
    meta = best[0]["metadata"]
    assert meta["record_id"] == "cat" and meta["name"] == best[0]["content"] == meta["title"]
    assert meta["category"] == "Animals & Nature" and meta["record_url"] == "https://example.org/emoji/1F431"
    assert Path(meta["image_path"]).is_absolute() and Path(meta["image_path"]).samefile(cat)
    # a text query works too: llm embeds it with mlx-clip/finds, which index registered
    texts = [json.loads(line) for line in llm("similar", "finds", "-d", db, "-c", "a cat").stdout.splitlines()]
    assert sorted(t["id"] for t in texts) == sorted(PICKED)


def test_vectors_are_the_models_own(tmp_path, tiny_hf, user_dir):
    records = write_records(tmp_path / "data")
    db = tmp_path / "c.db"
    assert index(records, tiny_hf, db, "--threads", "3") == 0
    stored = rows(db, Path(tiny_hf).name)
    model = mlx_clip.load(tiny_hf)
    for rid, (blob, meta) in stored.items():
        want = model.embed_images([meta["image_path"]])[0]
        np.testing.assert_allclose(np.frombuffer(blob, "<f4"), want, atol=1e-5)


def test_a_second_run_embeds_only_what_is_new_or_changed(tmp_path, tiny_hf, user_dir, capsys):
    records = write_records(tmp_path / "data")
    db = tmp_path / "c.db"
    assert index(records, tiny_hf, db) == 0
    assert embedded_count(capsys.readouterr().out) == len(PICKED)
    assert index(records, tiny_hf, db) == 0
    assert embedded_count(capsys.readouterr().out) == 0
    before = rows(db, Path(tiny_hf).name)
    # one image changed (another picture in its file), one record edited, one added, one removed
    shutil.copy(EMOJI / "images" / "1f408.png", tmp_path / "data" / "images" / "1f431.png")
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    lines[0]["name"] = "edited title"
    lines = [r for r in lines if r["id"] != "bike"]
    shutil.copy(EMOJI / "images" / "1f436.png", tmp_path / "data" / "images" / "1f436.png")
    lines.append({"id": "dog", "name": "dog face", "image_path": "images/1f436.png"})
    records.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert index(records, tiny_hf, db) == 0
    out = capsys.readouterr().out
    assert embedded_count(out) == 2  # the changed image and the new record
    assert "removed    1" in out
    after = rows(db, Path(tiny_hf).name)
    assert set(after) == set(PICKED) - {"bike"} | {"dog"}
    assert after["cat"][0] != before["cat"][0]
    assert after["100"][0] == before["100"][0]
    assert after["+1"][1]["title"] == "edited title" and after["+1"][0] == before["+1"][0]


def test_unreadable_images_are_listed_not_fatal(tmp_path, tiny_hf, user_dir, capsys):
    broken = {"id": "broken", "name": "broken", "image_path": "images/broken.png"}
    records = write_records(tmp_path / "data", extra=[broken])
    (tmp_path / "data" / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    db = tmp_path / "c.db"
    assert index(records, tiny_hf, db, "--collection", "finds") == 0
    out = capsys.readouterr().out
    assert "unreadable 1 ->" in out
    failures = [json.loads(line) for line in failures_path(db, "finds").read_text().splitlines()]
    assert [f["record_id"] for f in failures] == ["broken"]
    assert set(rows(db, "finds")) == set(PICKED)
    # a manifest given as it is, whose file broke after fetching: listed at the embedding stage
    manifest = tmp_path / "c_images" / "index-manifest.jsonl"
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    bad = Path(entries[0]["image_path"])
    bad = bad if bad.is_absolute() else manifest.parent / bad
    bad.write_bytes(b"garbage")
    entries[0]["sha256"] = "0" * 64  # as a fetch after the change would say
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert main(["--model", str(tiny_hf), "--data", str(manifest), "--out", str(db), "--collection", "finds",
                 "--no-progress"]) == 0
    failures = [json.loads(line) for line in failures_path(db, "finds").read_text().splitlines()]
    # the manifest's own fetch failures stay listed beside the new one
    assert [(f["record_id"], f["stage"]) for f in failures] == [("broken", "fetch"), (entries[0]["record_id"], "embed")]
    assert entries[0]["record_id"] not in rows(db, "finds")  # its old vector does not stay


def test_refusals_are_one_line(tmp_path, tiny_hf, openai_vocab, user_dir, capsys):
    from clip_fixtures import make_hf_clip

    records = write_records(tmp_path / "data")
    db = tmp_path / "c.db"
    assert index(records, tiny_hf, db, "--collection", "finds") == 0
    other = make_hf_clip(tmp_path / "other", projection_dim=8, vocab_folder=openai_vocab)
    capsys.readouterr()
    assert index(records, other, db, "--collection", "finds") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would mix vectors" in err
    (tmp_path / "not.db").write_text("not a database, " * 100)
    assert index(records, tiny_hf, tmp_path / "not.db") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an index file" in err
    (tmp_path / "empty").mkdir()
    assert index(records, tmp_path / "empty", db) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neither a model folder" in err
    (tmp_path / "broken_model").mkdir()
    (tmp_path / "broken_model" / "config.json").write_text("{not json")
    assert index(records, tmp_path / "broken_model", db) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot load the model" in err
    with IndexFile(db) as index_file:  # nothing of the refused model got in
        assert set(index_file.collections()) == {"finds"}


def test_a_second_index_on_one_file_stops_in_one_line_naming_the_first(tmp_path, tiny_hf, user_dir, capsys):
    """Two index.py on one index file each embedded every record (72,000 twice, on two cores)."""
    import os

    from mlx_clip.folder_lock import hold_folder_lock

    records = write_records(tmp_path / "data")
    db = tmp_path / "c.db"
    with hold_folder_lock(tmp_path, ".c.db.lock", "held"):  # what a running index.py holds
        assert index(records, tiny_hf, db, "--collection", "finds") == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: {db}: another index.py (pid {os.getpid()}) is writing to this index file; wait for it to finish"
    assert index(records, tiny_hf, db, "--collection", "finds") == 0  # the lock goes with its holder


def test_a_run_folder_is_a_model_and_two_models_share_a_file(tmp_path, tiny_hf, user_dir):
    from mlx_clip import registry

    run = tmp_path / "runs" / "holiday"
    shutil.copytree(tiny_hf, run / "model")
    (run / "config.json").write_text("{}")  # the run's settings, not a model config
    records = write_records(tmp_path / "data")
    db = tmp_path / "c.db"
    assert index(records, run, db) == 0
    with IndexFile(db) as index_file:
        _, info = index_file.collection("holiday")
    assert info.model_source == str((run / "model").resolve()) and info.model_id == "mlx-clip/holiday"
    assert registry.get_model("holiday").source == info.model_source
    # the base model beside it in the same file: two collections, each with its own model
    assert index(records, tiny_hf, db, "--collection", "base") == 0
    with IndexFile(db) as index_file:
        found = index_file.collections()
    assert set(found) == {"holiday", "base"} and found["base"][1].model_source == str(Path(tiny_hf).resolve())
    assert set(rows(db, "base")) == set(rows(db, "holiday")) == set(PICKED)


def test_parquet_round_trip(tmp_path, tiny_hf, user_dir):
    pq = pytest.importorskip("pyarrow.parquet")
    records = write_records(tmp_path / "data")
    db, out = tmp_path / "c.db", tmp_path / "c.parquet"
    assert index(records, tiny_hf, db, "--collection", "finds", "--parquet", str(out)) == 0
    table = pq.read_table(out).to_pylist()
    stored = rows(db, "finds")
    assert sorted(r["record_id"] for r in table) == sorted(stored)
    for row in table:
        blob, meta = stored[row["record_id"]]
        np.testing.assert_array_equal(np.asarray(row["vector"], np.float32), np.frombuffer(blob, "<f4"))
        assert row["category"] == meta["category"] and row["image_path"] == meta["image_path"]
        assert json.loads(row["keywords"]) == meta["keywords"]


def test_decoding_keeps_order_and_bounds_what_waits():
    waiting = {"now": 0, "most": 0}
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            waiting["now"] += 1
            waiting["most"] = max(waiting["most"], waiting["now"])
        time.sleep(0.001 * (i % 3))
        if i == 7:
            raise ValueError("bad item")
        return i * i

    seen = []
    for i, result in ordered_map(work, range(40), threads=4, ahead=5):
        with lock:
            waiting["now"] -= 1
        seen.append((i, result))
    assert [i for i, _ in seen] == list(range(40))
    assert isinstance(seen[7][1], ValueError) and seen[8][1] == 64
    assert waiting["most"] <= 5


def test_help_is_the_same_from_every_way_in_and_takes_fetchs_flags(capsys, monkeypatch):
    import sys

    from test_cli import _entry_point_help, _help

    as_module = _help([sys.executable, "-m", "mlx_clip.index", "--help"])
    as_script = _help([sys.executable, "index.py", "--help"])
    monkeypatch.setenv("COLUMNS", "100")
    assert as_module == as_script == _entry_point_help("index", capsys)
    assert as_module.startswith("usage: index.py ")
    for flag in ("--url-field", "--path-field", "--id-field", "--max-side", "--timeout", "--images", "--parquet"):
        assert flag in as_module
    assert "--out FILE.db" in as_module and "output folder for manifest.jsonl" not in as_module


def test_a_field_typo_or_a_taken_llm_name_is_said_before_any_image_is_fetched(tmp_path, tiny_hf, user_dir,
                                                                              fetch_server, capsys):
    """A --label-field, --title-field or link-template field no record has, and a collection name
    llm gives another model, are each one line naming the file or the name, before a single image
    is requested; the index file gets no collection and llm no registration from a refused run."""
    from mlx_clip import registry

    for record_id in PICKED:
        fetch_server.images[f"{record_id}.png"] = (EMOJI / "images" / "1f44d.png").read_bytes()
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"id": rid, "title": f"emoji {rid}", "type": "sign",
                                           "url": fetch_server.url(f"/img/{rid}.png")}) + "\n"
                               for rid in PICKED), encoding="utf-8")
    db = tmp_path / "c.db"
    before = sum(fetch_server.hits.values())  # the module's server: other tests' requests count too

    def refused(*flags: str) -> str:
        code = main(["--model", str(tiny_hf), "--data", str(records), "--out", str(db), "--no-progress", *flags])
        assert code == 2
        return capsys.readouterr().err.strip()

    for flags, said in [(("--label-field", "typ"), f"{records}: --label-field 'typ': no record has this field"),
                        (("--title-field", "titel"), f"{records}: --title-field 'titel': no record has this field"),
                        (("--link-template", "https://m.example/{uid}"),
                         f"{records}: --link-template field 'uid': no record has this field")]:
        assert refused("--collection", "finds", *flags) == f"error: {said}"
    registry.register_model("taken", str(EMOJI), replace=True, validate=False)  # another model holds the name
    assert "mlx-clip/taken is registered for" in refused("--collection", "taken", "--label-field", "type")
    assert sum(fetch_server.hits.values()) == before and not (tmp_path / "c_images").exists()
    with IndexFile(db) as index_file:
        assert index_file.collections() == {}
    assert set(registry.read_registry()) == {"taken"}

    assert main(["--model", str(tiny_hf), "--data", str(records), "--out", str(db), "--no-progress",
                 "--collection", "finds", "--label-field", "type"]) == 0  # the same, spelled right
    assert sum(fetch_server.hits.values()) == before + len(PICKED) and len(rows(db, "finds")) == len(PICKED)


def test_the_folder_a_training_sample_was_fetched_into_is_reused_and_its_manifest_kept(tmp_path, tiny_hf, user_dir,
                                                                                     fetch_server):
    """--images naming the fetch folder of a fine-tuning sample (data/): the sample's images are
    not downloaded again and its manifest.jsonl (what the run trained on, what --resume reads)
    stays the sample's; the index's own lists are index-manifest.jsonl and index-failures.jsonl."""
    from mlx_clip.data.fetch_config import FetchConfig
    from mlx_clip.data.fetcher import fetch_records

    names = [f"{rid}.png" for rid in PICKED]
    for name in names:
        fetch_server.images[name] = (EMOJI / "images" / "1f44d.png").read_bytes()
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"id": rid, "title": f"emoji {rid}", "url": fetch_server.url(f"/img/{rid}.png")})
                               + "\n" for rid in PICKED), encoding="utf-8")
    data = tmp_path / "data"
    before = sum(fetch_server.hits.values())  # the server is the module's: other tests' requests count too
    fetch_records(records, FetchConfig(out=data, progress=False), sample=3, seed=1)  # the training sample
    sample_manifest = (data / "manifest.jsonl").read_bytes()
    hits = sum(fetch_server.hits.values())
    assert hits == before + 3
    code = main(["--model", str(tiny_hf), "--data", str(records), "--out", str(tmp_path / "c.db"), "--images", str(data),
                 "--collection", "all", "--no-progress"])
    assert code == 0 and len(rows(tmp_path / "c.db", "all")) == len(PICKED)
    assert sum(fetch_server.hits.values()) == hits + len(PICKED) - 3  # only what the sample did not have
    assert (data / "manifest.jsonl").read_bytes() == sample_manifest
    assert len((data / "index-manifest.jsonl").read_text().splitlines()) == len(PICKED)
