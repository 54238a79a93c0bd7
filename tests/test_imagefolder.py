"""Datasets interop: fetch.py's folder loads with datasets' ImageFolder, and finetune reads an
ImageFolder (fetched or made by hand the way `datasets` users make one) as its data."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fetch_server import FetchServer, make_image  # noqa: E402

from mlx_clip.data.dataset import read_manifest  # noqa: E402
from mlx_clip.errors import InputError  # noqa: E402
from mlx_clip.fetch import main as fetch_main  # noqa: E402
from mlx_clip.settings import FetchConfig, FinetuneConfig, SampleConfig  # noqa: E402
from mlx_clip.data.source import resolve_manifest  # noqa: E402
from mlx_clip.run.prepare import prepare  # noqa: E402
from mlx_clip.data.imagefolder import write_metadata  # noqa: E402

LOAD = """
import json, sys
from datasets import load_dataset
ds = load_dataset("imagefolder", data_dir=sys.argv[1], split="train")
rows = [{k: (list(v.size) if k == "image" else v) for k, v in row.items()} for row in ds]
print(json.dumps(rows, default=str))
"""


def load_imagefolder(folder: Path, cache: Path) -> list[dict]:
    """Rows of datasets.load_dataset("imagefolder", data_dir=folder), offline, in a fresh process
    (datasets reads HF_DATASETS_OFFLINE when imported); images as [width, height]."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache),
           "HF_HOME": str(cache / "home")}
    result = subprocess.run([sys.executable, "-c", LOAD, str(folder)], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# Records whose fields datasets cannot type as they are: a column with numbers and text, nested
# objects with different keys, an empty object, lists, missing fields, keys ImageFolder would take
# for image columns (file_name, *_file_name) and a field named like its image column.
TRICKY = [
    {"id": "a", "title": "bronze coin", "year": 1850, "dims": {"h": 2, "unit": "cm"}, "tags": ["coin", "bronze"],
     "image": "front", "original_file_name": "IMG_1.TIF", "scan": {"file_name": "s1.tif"}, "extra": {}},
    {"id": "b", "title": "clay pot", "year": "c. 1850", "dims": {"w": 3.5}, "tags": [], "flag": True},
    {"id": "c", "year": None, "tags": ["pot"], "dims": {"h": 1, "w": 2}, "flag": False, "note": "only here"},
]


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    """fetch.py's output folder for TRICKY, downloaded from a local HTTP server."""
    folder = tmp_path_factory.mktemp("fetched")
    server = FetchServer().start()
    try:
        records = []
        for i, record in enumerate(TRICKY):
            server.images[record["id"]] = make_image((40 * i, 90, 200), size=(16 + i, 12))
            records.append({**record, "image_url": server.url(f"/img/{record['id']}")})
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        assert fetch_main([str(folder / "records.jsonl"), "--out", str(folder / "out"), "--no-progress"]) == 0
    finally:
        server.stop()
    return folder / "out"


def test_fetch_writes_metadata_that_datasets_loads_with_the_records(fetched, tmp_path, capsys):
    manifest = {e["id"]: e for e in map(json.loads, (fetched / "manifest.jsonl").read_text().splitlines())}
    rows = {r["id"]: r for r in load_imagefolder(fetched, tmp_path)}
    assert set(rows) == set(manifest) == {"a", "b", "c"}
    for key, row in rows.items():
        entry = manifest[key]
        assert row["image"] == [entry["width"], entry["height"]]  # the record's own image, decoded
        assert row["sha256"] == entry["sha256"] and row["image_url"] == entry["image_url"]
    a, b, c = rows["a"], rows["b"], rows["c"]
    assert (a["title"], b["title"], c["title"]) == ("bronze coin", "clay pot", None)  # missing -> None
    assert (a["year"], b["year"], c["year"]) == ("1850", "c. 1850", None)  # a mixed column becomes text
    assert a["dims"] == {"h": 2, "w": None, "unit": "cm"} and b["dims"] == {"h": None, "w": 3.5, "unit": None}
    assert (a["tags"], b["tags"], c["tags"]) == (["coin", "bronze"], [], ["pot"])
    assert (a["flag"], b["flag"], c["flag"]) == (None, True, False) and c["note"] == "only here"
    assert a["record_image"] == "front" and a["original_filename"] == "IMG_1.TIF"
    assert a["scan"] == {"filename": "s1.tif"} and a["extra"] is None


def test_metadata_lists_only_images_inside_the_folder(tmp_path):
    (tmp_path / "out" / "mine").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "out" / "mine" / "in.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "elsewhere" / "out.png")
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"id": "in", "path": "out/mine/in.png"}) + "\n"
                       + json.dumps({"id": "out", "path": "elsewhere/out.png"}) + "\n")
    args = [str(records), "--path-field", "path", "--out", str(tmp_path / "out"), "--no-progress"]
    assert fetch_main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    assert [(r["id"], r["file_name"]) for r in rows] == [("in", "mine/in.png")]
    assert str(write_metadata(tmp_path / "out" / "manifest.jsonl")).endswith(
        "the 1 images outside " + str(tmp_path / "out") + " (local paths from the records) are not in it")

    records.write_text(json.dumps({"id": "out", "path": "elsewhere/out.png"}) + "\n")
    assert fetch_main(args) == 0
    assert not (tmp_path / "out" / "metadata.jsonl").exists()  # the stale one is gone, not left describing 'in'


def write_hand_made_imagefolder(folder: Path) -> Path:
    """An ImageFolder as datasets users make one: images in a subfolder and metadata.csv."""
    (folder / "pics").mkdir(parents=True)
    with (folder / "metadata.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption", "kind"])
        for i in range(6):
            Image.new("RGB", (20 + i, 20), (40 * i, 10, 10)).save(folder / "pics" / f"p{i}.png")
            writer.writerow([f"pics/p{i}.png", f"a red square number {i}", "square" if i % 2 else "block"])
    return folder


def test_finetune_reads_an_imagefolder_made_with_datasets_conventions(tmp_path, tiny_hf):
    folder = write_hand_made_imagefolder(tmp_path / "imgs")
    assert len(load_imagefolder(folder, tmp_path / "cache")) == 6  # it is an ImageFolder to datasets too
    config = FinetuneConfig(data=str(folder), model=str(tiny_hf), captions=["{caption}"], label_field="kind",
                            batch_size=2, val_fraction=0.34, fetch=FetchConfig(out=tmp_path / "out"))
    prepared = prepare(config, say=lambda line: None)
    assert prepared.manifest == tmp_path / "out" / "manifest.jsonl"
    by_caption = {item.record["caption"]: item for item in prepared.items}
    assert len(by_caption) == 6
    for i in range(6):
        item = by_caption[f"a red square number {i}"]
        assert item.image_path.resolve() == (folder / "pics" / f"p{i}.png").resolve()
        assert item.record["kind"] == ("square" if i % 2 else "block")

    sampled = resolve_manifest(FinetuneConfig(data=str(folder), fetch=FetchConfig(out=tmp_path / "s"),
                                              sample=SampleConfig(sample=3)),
                               say=lambda line: None)
    assert len(read_manifest(sampled)) == 3


def test_finetune_reads_a_fetched_folder(fetched, tmp_path):
    assert resolve_manifest(FinetuneConfig(data=str(fetched)), say=print) == fetched / "manifest.jsonl"
    sample = resolve_manifest(FinetuneConfig(data=str(fetched), fetch=FetchConfig(out=tmp_path / "s"),
                                             sample=SampleConfig(sample=2)),
                              say=lambda line: None)
    items = read_manifest(sample)
    assert len(items) == 2 and all(item.image_path.resolve().is_relative_to(fetched.resolve()) for item in items)

    shared = tmp_path / "shared"  # what a datasets user receives: the images and metadata.jsonl only
    shutil.copytree(fetched / "images", shared / "images")
    shutil.copy(fetched / "metadata.jsonl", shared / "metadata.jsonl")
    items = read_manifest(resolve_manifest(FinetuneConfig(data=str(shared), fetch=FetchConfig(out=tmp_path / "o")),
                                           say=lambda line: None))
    assert sorted(item.record["id"] for item in items) == ["a", "b", "c"]
    assert all(item.image_path.resolve().is_relative_to(shared.resolve()) for item in items)


def test_imagefolder_mistakes_are_one_line(tmp_path):
    split = write_hand_made_imagefolder(tmp_path / "ds" / "train")
    with pytest.raises(InputError, match=r"an ImageFolder with splits \(train\); pass one split's folder, "
                                         r"e.g. --data .*ds/train"):
        resolve_manifest(FinetuneConfig(data=str(tmp_path / "ds")), say=print)
    with pytest.raises(InputError, match="is read as records and --out is the same folder; pass another --out"):
        resolve_manifest(FinetuneConfig(data=str(split), fetch=FetchConfig(out=split)), say=print)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="a folder without manifest.jsonl"):
        resolve_manifest(FinetuneConfig(data=str(tmp_path / "empty")), say=print)
