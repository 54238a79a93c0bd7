"""fetch's resized training copy (--max-side, default 512): what is stored, what the manifest says,
what the streams read, and how a later run with another size treats the folder."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fetch_server import FetchServer  # noqa: E402

from mlx_clip.data.dataset import read_manifest, image_key  # noqa: E402
from mlx_clip.data.fetch_config import FetchConfig  # noqa: E402
from mlx_clip.data.fetcher import fetch_records  # noqa: E402
from mlx_clip.data.stored_copy import DEFAULT_MAX_SIDE  # noqa: E402
from mlx_clip.data.stream import EvalStream, TrainStream  # noqa: E402
from mlx_clip.models.preprocess import ImageProcessor, load_image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients (so a resized copy can be compared with the original) with a bright corner
    (so a turn or a flip would show)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.stack([40 + 150 * x / width, 40 + 150 * y / height,
                    120 + 60 * np.sin(6.0 * (x + y) / width + rng.uniform(0, 3))], -1)
    out[: height // 4, : width // 4] = 250
    return out.astype(np.uint8)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def catalogue_images() -> dict[str, bytes]:
    """Large pictures in the formats and modes catalogues hold, and one small JPEG."""
    rgb = Image.fromarray(picture(1200, 900))
    exif, exif_png = Image.Exif(), Image.Exif()
    exif[0x0112] = 6  # stored sideways: turned 90 degrees when shown
    exif_png[0x0112] = 8  # the other way
    rgba = Image.fromarray(picture(1000, 600, 1)).convert("RGBA")  # shown 600x1000, transparent on the left
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 600, dtype=np.uint8)[:, None], (1, 1000))))
    grey16 = Image.fromarray((picture(1000, 600, 2)[..., 0].astype(np.uint16) * 257))
    return {
        "photo.jpg": encoded(rgb, "JPEG", quality=90),
        "cmyk.jpg": encoded(rgb.convert("CMYK"), "JPEG", quality=90),
        "alpha.png": encoded(rgba, "PNG", exif=exif_png),
        "grey16.png": encoded(grey16, "PNG"),
        "sideways.jpg": encoded(Image.fromarray(picture(1000, 500, 3)), "JPEG", quality=90, exif=exif),
        "small.jpg": encoded(Image.fromarray(picture(400, 300, 4)), "JPEG", quality=90),
    }


@pytest.fixture(scope="module")
def server():
    server = FetchServer().start()
    server.images.update(catalogue_images())
    yield server
    server.stop()


@pytest.fixture()
def records(server, tmp_path):
    records = [{"id": name.split(".")[0], "image_url": server.url(f"/img/{name}")} for name in catalogue_images()]
    records.append({"id": "photo-again", "image_url": server.url("/img/photo.jpg")})  # one image, two records
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    return path


def fetch(records: Path, out: Path, **settings) -> tuple[str, dict[str, dict]]:
    summary = fetch_records(records, FetchConfig(out=out, progress=False, **settings))
    assert not summary.failed, summary
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return str(summary), {entry["record_id"]: entry for entry in manifest}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_default_stores_resized_copies_with_the_originals_identity(server, records, tmp_path):
    images = catalogue_images()
    text, manifest = fetch(records, tmp_path / "out")
    assert DEFAULT_MAX_SIDE == 512
    assert "resized          6 stored with the longest side at 512 px" in text, text
    shown = {"photo": (512, 384), "cmyk": (512, 384), "alpha": (307, 512), "grey16": (512, 307),
             "sideways": (256, 512), "photo-again": (512, 384)}
    for rid, entry in manifest.items():
        name = "photo.jpg" if rid == "photo-again" else next(n for n in images if n.startswith(rid + "."))
        original = Image.open(io.BytesIO(images[name]))
        assert entry["sha256"] == sha(images[name])  # identity: the original's bytes
        assert (entry["original_width"], entry["original_height"]) == original.size
        assert "original_path" not in entry
        stored = tmp_path / "out" / entry["image_path"]
        with Image.open(stored) as copy:
            assert (entry["width"], entry["height"]) == copy.size
            if rid == "small":
                assert stored.read_bytes() == images[name]  # already small: the bytes as they came
                continue
            assert copy.size == shown[rid]
            assert copy.format == ("PNG" if rid == "alpha" else "JPEG")
            assert copy.mode == {"alpha": "RGBA", "grey16": "L"}.get(rid, "RGB")
            assert 0x0112 not in copy.getexif()
        if rid == "alpha":  # transparency kept, not flattened
            alpha = np.asarray(Image.open(stored))[..., 3].astype(float)
            assert alpha[:, 0].mean() < 5 and alpha[:, -1].mean() > 250
        # The same picture, upright, as training would see the original (8-bit RGB, on white).
        want = np.asarray(load_image(Image.open(io.BytesIO(images[name]))).resize(shown[rid], Image.LANCZOS), float)
        got = np.asarray(load_image(stored), float)
        assert np.abs(got - want).mean() < 2.5, rid
    # Records sharing one image still share one group (the split and the loss read sha256).
    items = read_manifest(tmp_path / "out" / "manifest.jsonl")
    keys = {item.record_id: image_key(item) for item in items}
    assert keys["photo"] == keys["photo-again"] and len(set(keys.values())) == 6


def test_max_side_0_keeps_every_file_byte_for_byte_and_ids_do_not_change(server, records, tmp_path):
    images = catalogue_images()
    text, full = fetch(records, tmp_path / "full", max_side=0)
    assert "stored           full size (--max-side 0)" in text
    for rid, entry in full.items():
        name = "photo.jpg" if rid == "photo-again" else next(n for n in images if n.startswith(rid + "."))
        assert (tmp_path / "full" / entry["image_path"]).read_bytes() == images[name]
        assert (entry["width"], entry["height"]) == (entry["original_width"], entry["original_height"])
    _, resized = fetch(records, tmp_path / "resized")
    assert list(full) == list(resized)  # same records, same order
    for rid in full:
        assert resized[rid]["sha256"] == full[rid]["sha256"]
        assert Path(resized[rid]["image_path"]).stem == Path(full[rid]["image_path"]).stem


def test_keep_originals_keeps_them_beside_and_names_them(server, records, tmp_path):
    images = catalogue_images()
    text, manifest = fetch(records, tmp_path / "out", keep_originals=True)
    assert f"originals        kept in {tmp_path / 'out' / 'originals'}" in text
    for rid, entry in manifest.items():
        name = "photo.jpg" if rid == "photo-again" else next(n for n in images if n.startswith(rid + "."))
        kept = tmp_path / "out" / entry["original_path"]
        assert kept.read_bytes() == images[name]
        if rid == "small":
            assert entry["original_path"] == entry["image_path"]
        else:
            assert entry["original_path"].startswith("originals/") and entry["image_path"].startswith("images/")
    # Without the flag nothing is kept.
    fetch(records, tmp_path / "plain")
    assert not (tmp_path / "plain" / "originals").exists()


def test_a_folder_fetched_before_is_resized_in_place_and_a_larger_size_downloads_again(server, records, tmp_path):
    out = tmp_path / "out"
    _, full = fetch(records, out, max_side=0)  # as fetch did before copies existed
    hits = sum(server.hits.values())
    text, resized = fetch(records, out)
    assert sum(server.hits.values()) == hits  # made from the full-size files on disk, nothing downloaded
    assert "6 of them stored again at this size from files already here" in text, text
    assert {r: e["sha256"] for r, e in resized.items()} == {r: e["sha256"] for r, e in full.items()}
    assert max(resized["photo"]["width"], resized["photo"]["height"]) == 512
    assert len(list((out / "images").rglob("*.*"))) == 7  # the full-size files were replaced, not kept beside

    text, again = fetch(records, out)  # the same size again: nothing to do
    assert "stored again" not in text and sum(server.hits.values()) == hits

    text, smaller = fetch(records, out, max_side=300)  # smaller: from the stored copies, no download
    assert sum(server.hits.values()) == hits and "7 of them stored again" in text  # small too
    assert (smaller["photo"]["width"], smaller["photo"]["height"]) == (300, 225)
    assert smaller["photo"]["sha256"] == full["photo"]["sha256"]

    text, larger = fetch(records, out, max_side=640)  # larger: needs the originals, downloaded again
    assert "originals downloaded again" in text, text
    assert sum(server.hits.values()) > hits
    assert (larger["photo"]["width"], larger["photo"]["height"]) == (640, 480)
    assert {r: e["sha256"] for r, e in larger.items()} == {r: e["sha256"] for r, e in full.items()}


def test_kept_originals_are_resized_again_without_a_download(server, records, tmp_path):
    out = tmp_path / "out"
    fetch(records, out, keep_originals=True)
    hits = sum(server.hits.values())
    _, larger = fetch(records, out, max_side=800, keep_originals=True)
    assert sum(server.hits.values()) == hits
    assert (larger["photo"]["width"], larger["photo"]["height"]) == (800, 600)
    _, full = fetch(records, out, max_side=0)
    assert sum(server.hits.values()) == hits
    assert (out / full["photo"]["image_path"]).read_bytes() == catalogue_images()["photo.jpg"]
    assert not (out / "originals").exists() or not list((out / "originals").rglob("*.*"))


def test_a_run_killed_after_writing_copies_keeps_the_originals_identity(server, records, tmp_path):
    """The copy itself carries the original's sha256: a run that never wrote its manifest (killed)
    is resumed with the same identities."""
    out = tmp_path / "out"
    _, first = fetch(records, out)
    (out / "manifest.jsonl").unlink()
    hits = sum(server.hits.values())
    _, again = fetch(records, out)
    assert sum(server.hits.values()) == hits
    assert again == first


def test_the_streams_read_the_resized_copy(server, records, tmp_path):
    out = tmp_path / "out"
    fetch(records, out)
    items = [item for item in read_manifest(out / "manifest.jsonl") if item.record_id != "small"]
    assert all(Path(item.image_path).parent.parent == out / "images" for item in items)
    processor = ImageProcessor.from_dict({}, 32)
    seen: list[str] = []
    stream = EvalStream([str(item.image_path) for item in items], processor, 2, 1)
    original_pixels = stream.pixels

    def spy(path: str) -> np.ndarray:
        seen.append(path)
        return original_pixels(path)

    stream.pixels = spy
    pixels = np.concatenate([b["pixels"] for b in stream])
    assert pixels.shape == (len(items), 32, 32, 3)
    assert set(seen) == {str(item.image_path) for item in items}  # the copies, nothing else
    for item in items:
        assert max(Image.open(item.image_path).size) == 512
    train = TrainStream(items, None, None, processor, 32, 2, seed=0)
    samples = [dict(index=np.array(i, np.int64), image_path=str(item.image_path).encode(),
                    aug=np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 1], np.float32)) for i, item in enumerate(items)]
    assert sum(len(b["index"]) for b in train.batches(samples, 2)) == len(items)


def test_the_flag_is_on_fetch_and_finetune():
    for script in ("fetch.py", "finetune.py"):
        help_text = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True,
                                   text=True, cwd=REPO, timeout=60).stdout
        assert "--max-side N" in help_text and "(default: 512)" in help_text and "--keep-originals" in help_text
    result = subprocess.run([sys.executable, str(REPO / "fetch.py"), "records.json", "--max-side", "-1"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --max-side must be 0 (full size) or a number of pixels, got -1"
