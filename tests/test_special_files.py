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
