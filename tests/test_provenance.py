"""Provenance tags are trusted only on copies this fetch folder signed (issue 24): a served image
that carries the project's tag cannot set its own manifest sha256, on the first run or on a
resume; the folder's key is a 0600 file that is never followed through a link."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fetch_server import FetchServer  # noqa: E402

from mlx_clip.data.fetch_config import FetchConfig  # noqa: E402
from mlx_clip.data.fetcher import fetch_records  # noqa: E402
from mlx_clip.data.provenance_key import KEY_FILE, folder_key  # noqa: E402
from mlx_clip.data.stored_copy import TAG, Original, make_copy, read_original  # noqa: E402
from mlx_clip.errors import InputError  # noqa: E402

FORGED = "f" * 64


def _jpeg(width: int, height: int, comment: bytes | None = None) -> bytes:
    rng = np.random.default_rng(width)
    out = io.BytesIO()
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    image.save(out, format="JPEG", quality=90, **({"comment": comment} if comment else {}))
    return out.getvalue()


def forged_tag(width: int, height: int) -> bytes:
    fields = {"sha256": FORGED, "width": width, "height": height, "format": "JPEG", "mac": "0" * 64}
    return f"{TAG} {json.dumps(fields)}".encode()


@pytest.fixture(scope="module")
def server():
    server = FetchServer().start()
    server.images["small.jpg"] = _jpeg(300, 200, forged_tag(300, 200))  # stored as it is (<= 512)
    server.images["plain.jpg"] = _jpeg(200, 100, f"{TAG} {json.dumps({'sha256': FORGED, 'width': 200, 'height': 100, 'format': 'JPEG'})}".encode())
    yield server
    server.stop()


def _manifest(out: Path) -> dict[str, dict]:
    return {e["record_id"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def test_a_served_image_carrying_a_forged_tag_does_not_set_its_sha256(server, tmp_path):
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"id": name.split(".")[0], "image_url": server.url(f"/img/{name}")}
                                   for name in ("small.jpg", "plain.jpg")]))
    out = tmp_path / "out"
    for _ in range(2):  # the first run, then a resume after a kill (no manifest: identities from the files)
        summary = fetch_records(records, FetchConfig(out=out, progress=False))
        assert not summary.failed
        manifest = _manifest(out)
        for rid in ("small", "plain"):
            assert manifest[rid]["sha256"] == hashlib.sha256(server.images[f"{rid}.jpg"]).hexdigest()
        (out / "manifest.jsonl").unlink()


def test_copies_signed_by_the_folder_are_trusted_and_others_are_not(tmp_path):
    data = _jpeg(1200, 900)
    original = Original(hashlib.sha256(data).hexdigest(), 1200, 900, "JPEG")
    key = folder_key(tmp_path)
    signed = make_copy(data, original, 512, key).data
    assert read_original(signed, [key]) == original
    assert read_original(signed, [folder_key(tmp_path / "elsewhere")]) is None
    assert read_original(make_copy(data, original, 512).data, [key]) is None  # unsigned


def test_the_key_is_private_and_not_followed_through_a_link(tmp_path):
    key = folder_key(tmp_path / "out")
    path = tmp_path / "out" / KEY_FILE
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600 and folder_key(tmp_path / "out") == key
    other = tmp_path / "other"
    other.mkdir()
    target = tmp_path / "target"
    target.write_bytes(b"x" * 32)
    os.symlink(target, other / KEY_FILE)
    with pytest.raises(InputError, match="not a key this tool wrote"):
        folder_key(other)
    assert target.read_bytes() == b"x" * 32
