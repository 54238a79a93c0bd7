"""Local image paths that are not regular files (a FIFO, /dev/zero, a folder) are that record's
failure, refused before any byte is read, so a FIFO never blocks the fetch and /dev/zero never
fills memory; reading a local file is bounded by --deadline."""

import json
import os
import threading
import time

import pytest

from test_max_side import encoded, picture
from PIL import Image

from mlx_clip.data import local_images
from mlx_clip.data.fetch_config import FetchConfig
from mlx_clip.data.fetcher import fetch_records
from mlx_clip.data.image_files import ImageProblem


def test_special_files_are_each_their_records_failure(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "good.png").write_bytes(encoded(Image.fromarray(picture(64, 48)), "PNG"))
    os.mkfifo(tmp_path / "pics" / "pipe.jpg")
    (tmp_path / "pics" / "folder.jpg").mkdir()
    (tmp_path / "pics" / "zero.jpg").symlink_to("/dev/zero")
    rows = [{"id": "good", "image_path": "pics/good.png"}, {"id": "pipe", "image_path": "pics/pipe.jpg"},
            {"id": "folder", "image_path": "pics/folder.jpg"}, {"id": "zero", "image_path": "pics/zero.jpg"},
            {"id": "device", "image_path": "/dev/zero"}]
    (tmp_path / "records.json").write_text(json.dumps(rows))
    result = {}

    def fetch():  # in a thread: a FIFO that blocked would hang the test, not fail it
        result["summary"] = fetch_records(tmp_path / "records.json", FetchConfig(
            out=tmp_path / "out", path_field="image_path", progress=False, deadline=2))

    worker = threading.Thread(target=fetch, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the fetch blocked on a special file"
    assert time.monotonic() - started < 30
    failures = {f["id"]: f["reason"] for f in map(json.loads, (tmp_path / "out" / "failures.jsonl").read_text().splitlines())}
    assert failures == {"pipe": "not_a_file", "folder": "not_a_file", "zero": "not_a_file", "device": "not_a_file"}
    manifest = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["record_id"] for line in manifest] == ["good"]


def test_reading_a_local_file_stops_at_the_deadline(tmp_path, monkeypatch):
    path = tmp_path / "slow.png"
    path.write_bytes(b"x" * (3 << 20))  # three chunks
    clock = iter(range(0, 1000, 10))  # every look at the clock is 10 s later: a very slow disk
    monkeypatch.setattr(local_images.time, "monotonic", lambda: next(clock))
    with pytest.raises(ImageProblem, match="deadline"):
        local_images.read_local_file(path, deadline=15)
    assert local_images.read_local_file(path, deadline=None) == b"x" * (3 << 20)


def _in_time(work, seconds: float = 30):
    """work() in a thread: a read that blocked on a FIFO would hang the test, not fail it."""
    result = {}

    def run():
        try:
            result["value"] = work()
        except Exception as err:  # noqa: BLE001  (the test reads what was raised)
            result["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked on a special file"
    return result


def test_special_files_named_by_someone_elses_files_are_refused_not_waited_on(tmp_path, tiny_hf):
    """Paths that a manifest, an index or a model folder from someone else names: the one image
    opener (embed_images, the index, thumbnails, evaluation), a manifest's image the index hashes
    and a model's weights file are refused in one line when they are a FIFO or a device."""
    import mlx_clip
    from mlx_clip.errors import InputError
    from mlx_clip.index import main as index_main
    from mlx_clip.models.image_open import open_image_bounded
    from mlx_clip.models.weights import read_header

    os.mkfifo(tmp_path / "pipe.png")
    good = tmp_path / "good.png"
    good.write_bytes(encoded(Image.fromarray(picture(64, 48)), "PNG"))
    for special in (tmp_path / "pipe.png", "/dev/zero"):
        error = _in_time(lambda: open_image_bounded(special))["error"]
        assert isinstance(error, InputError) and str(error) == (
            f"{special}: not a regular file (a FIFO, device or socket), not an image file")
    model = mlx_clip.load(tiny_hf)
    error = _in_time(lambda: model.embed_images([str(good), str(tmp_path / "pipe.png")]))["error"]
    assert "pipe.png: not a regular file" in str(error)

    # an index of a manifest that names the FIFO (its record has no sha256: the index hashes the file)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"record_id": "good", "image_path": "good.png", "sha256": "0" * 64}) + "\n"
                        + json.dumps({"record_id": "pipe", "image_path": "pipe.png"}) + "\n")
    code = _in_time(lambda: index_main(["--model", str(tiny_hf), "--data", str(manifest), "--out",
                                        str(tmp_path / "c.db"), "--collection", "c", "--no-progress"]))["value"]
    assert code == 0
    failures = [json.loads(line) for line in (tmp_path / "c.c.failures.jsonl").read_text().splitlines()]
    assert [(f["record_id"], f["reason"]) for f in failures] == [("pipe", "unreadable_image")]

    os.mkfifo(tmp_path / "model.safetensors")
    error = _in_time(lambda: read_header(tmp_path / "model.safetensors"))["error"]
    assert str(error) == f"{tmp_path / 'model.safetensors'}: cannot read (not a regular file (a FIFO, device or socket))"


def test_a_settings_file_that_is_a_fifo_device_or_folder_is_one_line(tmp_path, capsys):
    """--config naming a FIFO, /dev/zero or a folder: exit 2 and one line naming it, never a wait."""
    from mlx_clip import finetune

    os.mkfifo(tmp_path / "run.yaml")
    for path, said in ((tmp_path / "run.yaml", "not a regular file (a FIFO, device or socket)"),
                       ("/dev/zero", "not a regular file (a FIFO, device or socket)"), (tmp_path, "is a folder")):
        assert _in_time(lambda: finetune.main(["--config", str(path)]))["value"] == 2
        assert capsys.readouterr().err == f"error: {path}: {said}, not a file of settings\n"


def test_a_fifo_beside_a_models_weights_is_refused_when_the_index_hashes_the_model(tmp_path, tiny_hf):
    """index.py hashes every weights file of the model folder (what a re-run compares): a FIFO named
    like one is refused in one line, never waited on."""
    import shutil

    from mlx_clip.use.index_model import model_identity

    folder = shutil.copytree(tiny_hf, tmp_path / "model")
    os.mkfifo(folder / "stray.safetensors")
    import mlx_clip

    model = mlx_clip.load(folder)
    error = _in_time(lambda: model_identity(model, folder))["error"]
    assert isinstance(error, OSError) and "not a regular file" in str(error) and "stray.safetensors" in str(error)
