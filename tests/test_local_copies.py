"""Local images (--path-field) larger than --max-side are read through a resized copy in OUT/images
(issue 17), made once, with the local file's identity; the local files themselves are only read."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_max_side import encoded, picture

import mlx_clip.data.local_images as local_images
from mlx_clip import finetune
from mlx_clip.data import stream
from mlx_clip.data.dataset import image_key, read_manifest
from mlx_clip.data.fetch_config import MANIFEST_KEYS, FetchConfig
from mlx_clip.data.fetcher import fetch_records
from mlx_clip.data.imagefolder import write_metadata
from mlx_clip.data.provenance_key import folder_key
from mlx_clip.data.stored_copy import read_original
from mlx_clip.models.preprocess import load_image


def local_pictures() -> dict[str, bytes]:
    """Large PNG and JPEG files as a catalogue keeps them on disk, a transparent and a sideways
    one, and a small one."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turned 90 degrees when shown
    rgba = Image.fromarray(picture(1000, 600, 1)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 1000, dtype=np.uint8)[None], (600, 1))))
    return {
        "big.png": encoded(Image.fromarray(picture(1200, 900)), "PNG"),
        "big.jpg": encoded(Image.fromarray(picture(1200, 900, 2)), "JPEG", quality=90),
        "alpha.png": encoded(rgba, "PNG"),
        "sideways.jpg": encoded(Image.fromarray(picture(1000, 500, 3)), "JPEG", quality=90, exif=exif),
        "small.png": encoded(Image.fromarray(picture(400, 300, 4)), "PNG"),
    }


SHOWN = {"big.png": (512, 384), "big.jpg": (512, 384), "alpha.png": (512, 307), "sideways.jpg": (256, 512)}


@pytest.fixture()
def records(tmp_path) -> Path:
    (tmp_path / "pics").mkdir()
    for name, data in local_pictures().items():
        (tmp_path / "pics" / name).write_bytes(data)
    rows = [{"id": name.split(".")[0] + "-" + name.split(".")[1], "image_path": f"pics/{name}"}
            for name in local_pictures()]
    rows.append({"id": "big-again", "image_path": "pics/big.png"})  # one file, two records
    path = tmp_path / "records.json"
    path.write_text(json.dumps(rows))
    return path


def fetch(records: Path, out: Path, **settings) -> tuple[str, dict[str, dict]]:
    summary = fetch_records(records, FetchConfig(out=out, path_field="image_path", progress=False, **settings))
    assert not summary.failed, summary
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return str(summary), {entry["record_id"]: entry for entry in manifest}


def pics_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_large_local_files_are_read_through_copies_with_their_identity(records, tmp_path):
    pics, out = tmp_path / "pics", tmp_path / "out"
    before = pics_state(pics)
    text, manifest = fetch(records, out, keep_originals=True)  # nothing to keep for local files
    assert pics_state(pics) == before  # the user's files: same bytes, never touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pics", "records.json"]
    assert not (out / "originals").exists()
    assert "local files      6" in text
    assert f"5 read from copies resized to 512 px in {out / 'images'} (5 made in this run)" in text, text
    for rid, entry in manifest.items():
        name = "big.png" if rid == "big-again" else rid.replace("-", ".")
        data = local_pictures()[name]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert (entry["original_width"], entry["original_height"]) == Image.open(pics / name).size
        assert set(entry) == {"id", *MANIFEST_KEYS} - ({"original_path"} if name == "small.png" else set())
        if name == "small.png":  # small: read where it is, as before copies
            assert (out / entry["image_path"]).resolve() == (pics / name).resolve()
            assert (entry["width"], entry["height"]) == (400, 300)
            continue
        assert (out / entry["original_path"]).resolve() == (pics / name).resolve()
        assert entry["image_path"].startswith("images/")
        copy = out / entry["image_path"]
        with Image.open(copy) as image:
            assert image.size == SHOWN[name] == (entry["width"], entry["height"])
            assert image.format == ("PNG" if name == "alpha.png" else "JPEG")
            assert image.mode == ("RGBA" if name == "alpha.png" else "RGB")
        assert read_original(copy.read_bytes(), [folder_key(out)]).sha256 == entry["sha256"]
        want = np.asarray(load_image(Image.open(pics / name)).resize(SHOWN[name], Image.LANCZOS), float)
        assert np.abs(np.asarray(load_image(copy), float) - want).mean() < 2.5, name
    assert manifest["big-png"]["image_path"] != manifest["big-again"]["image_path"]  # one file per record id
    keys = {item.record_id: image_key(item) for item in read_manifest(out / "manifest.jsonl")}
    assert keys["big-png"] == keys["big-again"] and len(set(keys.values())) == 5  # still one group


def test_max_side_0_reads_every_local_file_in_place(records, tmp_path):
    out = tmp_path / "out"
    text, manifest = fetch(records, out, max_side=0)
    assert "read from copies" not in text and "stored           full size (--max-side 0)" in text
    assert not (out / "images").exists() or not list((out / "images").rglob("*.*"))
    for entry in manifest.values():
        assert "original_path" not in entry
        assert (out / entry["image_path"]).resolve().parent == (tmp_path / "pics").resolve()
        assert (entry["width"], entry["height"]) == (entry["original_width"], entry["original_height"])


def test_a_rerun_keeps_current_copies_without_decoding_the_originals(records, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _, first = fetch(records, out)
    copies = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "images").rglob("*.*")}
    decoded: list[tuple[int, int]] = []
    real = local_images.inspect_image

    def spy(data: bytes):
        info = real(data)
        decoded.append((info.width, info.height))
        return info

    monkeypatch.setattr(local_images, "inspect_image", spy)
    text, again = fetch(records, out)
    assert again == first
    assert "(0 made in this run)" in text, text
    assert decoded == [(400, 300)]  # only the small file, read in place, is checked again
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "images").rglob("*.*")} == copies


def test_another_max_side_remakes_the_copies_from_the_local_files(records, tmp_path):
    out, pics = tmp_path / "out", tmp_path / "pics"
    before = pics_state(pics)
    _, first = fetch(records, out)
    # 300: the small file (400x300) gets a copy too; 800: larger than the copies, made from the files
    for side, size, copies in ((300, (300, 225), 6), (800, (800, 600), 5)):
        text, manifest = fetch(records, out, max_side=side)
        assert f"({copies} made in this run)" in text, text
        entry = manifest["big-png"]
        assert (entry["width"], entry["height"]) == size == Image.open(out / entry["image_path"]).size
        assert entry["sha256"] == first["big-png"]["sha256"]
        assert len(list((out / "images").rglob("*.*"))) == copies  # replaced (or removed), not kept beside
    _, manifest = fetch(records, out, max_side=2000)  # no file is larger: all read in place again
    assert all("original_path" not in e for e in manifest.values())
    assert not list((out / "images").rglob("*.*"))  # the copies no longer read are gone
    assert pics_state(pics) == before


def test_a_changed_local_file_gets_a_new_copy(records, tmp_path):
    out = tmp_path / "out"
    _, first = fetch(records, out)
    (tmp_path / "pics" / "big.jpg").write_bytes(encoded(Image.fromarray(picture(900, 1200, 7)), "JPEG"))
    text, again = fetch(records, out)
    assert "(1 made in this run)" in text
    assert again["big-jpg"]["sha256"] != first["big-jpg"]["sha256"]
    assert Image.open(out / again["big-jpg"]["image_path"]).size == (384, 512)


def test_a_manifest_sampled_again_keeps_the_local_files_identity(records, tmp_path):
    _, first = fetch(records, tmp_path / "one")
    again = fetch_records(tmp_path / "one" / "manifest.jsonl", FetchConfig(
        out=tmp_path / "two", path_field="image_path", max_side=300, progress=False))
    assert not again.failed
    lines = (tmp_path / "two" / "manifest.jsonl").read_text().splitlines()
    second = {entry["record_id"]: entry for entry in map(json.loads, lines)}
    for rid, entry in second.items():  # copies of the copies, or the copies in place, with the files' identity
        assert entry["sha256"] == first[rid]["sha256"]
        assert (entry["original_width"], entry["original_height"]) == (first[rid]["original_width"],
                                                                         first[rid]["original_height"])
    assert (second["big-png"]["width"], second["big-png"]["height"]) == (300, 225)


def test_imagefolder_lists_the_copies_inside_the_folder(records, tmp_path):
    out = tmp_path / "out"
    fetch(records, out)
    summary = write_metadata(out / "manifest.jsonl")
    assert (summary.rows, summary.outside) == (5, 1)  # the small file stays outside, where it is
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert all(row["file_name"].startswith("images/") and (out / row["file_name"]).is_file() for row in rows)
    assert {Path(row["original_path"]).name for row in rows} == {"big.png", "big.jpg", "alpha.png", "sideways.jpg"}


def test_finetune_on_a_folder_of_large_local_images_trains_on_the_copies(tiny_hf, tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    (folder / "pics").mkdir(parents=True)
    with (folder / "metadata.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption"])
        for i in range(6):
            Image.fromarray(picture(640, 480, i)).save(folder / "pics" / f"p{i}.png")
            writer.writerow([f"pics/p{i}.png", f"a picture number {i}"])
    before = pics_state(folder / "pics")
    read: list[str] = []
    for name in ("decode_reduced", "load_image"):  # what the training and evaluation streams decode with
        real = getattr(stream, name)
        monkeypatch.setattr(stream, name, lambda path, *a, real=real: read.append(str(path)) or real(path, *a))
    out = tmp_path / "out"
    assert finetune.main(["--data", str(folder), "--out", str(out), "--model", str(tiny_hf), "--epochs", "1",
                          "--batch-size", "2", "--val-fraction", "0.34", "--caption", "{caption}",
                          "--runs-dir", str(tmp_path / "runs"), "--name", "local", "--no-progress",
                          "--retention-images", "0"]) == 0  # retention would read the bundled emoji
    assert read and all(Path(p).resolve().is_relative_to((out / "images").resolve()) for p in read)
    assert all(max(Image.open(p).size) == 512 for p in set(read))
    assert pics_state(folder / "pics") == before


def test_a_manifest_sampled_again_elsewhere_keeps_its_original_paths_pointing_at_the_files(records, tmp_path):
    """Copies read in place from a first manifest keep an original_path that names the user's file
    from the new manifest's folder too (it was relative to the first manifest)."""
    _, first = fetch(records, tmp_path / "one")
    deeper = tmp_path / "two" / "deeper"
    again = fetch_records(tmp_path / "one" / "manifest.jsonl", FetchConfig(
        out=deeper, path_field="image_path", progress=False))
    assert not again.failed
    second = {e["record_id"]: e for e in map(json.loads, (deeper / "manifest.jsonl").read_text().splitlines())}
    for rid, entry in first.items():
        if "original_path" in entry:  # a copy in one/images, read in place by the second run
            want = (tmp_path / "one" / entry["original_path"]).resolve()
            assert (deeper / second[rid]["original_path"]).resolve() == want, rid
            assert (deeper / second[rid]["image_path"]).resolve() == (tmp_path / "one" / entry["image_path"]).resolve()
