"""Two README claims about fetching, tested at their full size: a thousand URLs ending in
`default.jpg` give a thousand files, and `fetch.py` writes nothing outside its output folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fetch_server import FetchServer, make_image  # noqa: E402

from mlx_clip.data.fetch_config import FetchConfig  # noqa: E402
from mlx_clip.data.fetcher import fetch_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    server = FetchServer().start()
    yield server
    server.stop()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_thousand_urls_ending_in_default_jpg_give_a_thousand_files(server, tmp_path):
    n = 1000
    for k in range(n):  # a distinct colour each: 10 levels per channel
        server.images[f"d{k}"] = make_image((k % 10 * 25, k // 10 % 10 * 25, k // 100 * 25), "JPEG")
    served = {f"obj-{k}": server.images[f"d{k}"] for k in range(n)}
    assert len({hashlib.sha256(data).digest() for data in served.values()}) == n
    records = [{"id": f"obj-{k}", "image_url": server.url(f"/iiif/d{k}/full/675,/0/default.jpg")} for k in range(n)]
    (tmp_path / "records.json").write_text(json.dumps(records))
    started = time.monotonic()
    summary = fetch_records(tmp_path / "records.json", FetchConfig(out=tmp_path / "out", progress=False,
                                                                  concurrency=32, per_host=32))
    seconds = time.monotonic() - started
    manifest = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert summary.usable == len(manifest) == n, summary
    assert len({entry["image_path"] for entry in manifest}) == n
    assert len([p for p in (tmp_path / "out" / "images").rglob("*") if p.is_file()]) == n
    for entry in manifest:  # each record's file holds its own image
        data = (tmp_path / "out" / entry["image_path"]).read_bytes()
        assert data == served[entry["id"]], entry["id"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert all(server.count(f"/iiif/d{k}/full/675,/0/default.jpg") == 1 for k in range(n))
    print(f"{n} default.jpg fetched in {seconds:.1f} s")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (bytecode caches and .git aside): (size, mtime)."""
    out = {}
    for path in folder.rglob("*"):
        if ".git" in path.parts or "__pycache__" in path.parts:
            continue
        stat = path.lstat()
        out[str(path)] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns if path.is_file() else 0)
    return out


def test_fetch_writes_nothing_outside_its_output_folder(server, tmp_path):
    """fetch.py in a subprocess whose working folder, HOME and TMPDIR are watched folders, with
    records in a folder of their own and ids made to escape: only OUT changes, and neither the
    repository nor any of those folders gains, loses or changes a file."""
    base = tmp_path / "world"
    cwd, home, tmp, records_dir = (base / name for name in ("cwd", "home", "tmp", "records"))
    for folder in (cwd, home, tmp, records_dir, base / "data"):
        folder.mkdir(parents=True)
    (home / ".config").mkdir()
    for k in range(4):
        server.images[f"w{k}"] = make_image((60 * k, 200, 90), "PNG")
    ids = ["../../escape", "/tmp/absolute", "..\\..\\windows", "~/home"]
    records = [{"id": record_id, "image_url": server.url(f"/img/w{k}")} for k, record_id in enumerate(ids)]
    records += [{"id": "../dup", "image_url": server.url("/img/w0")},
                {"id": "../../missing", "image_url": server.url("/missing/x")},
                {"id": "..", "image_url": server.url("/truncated/w1")}]
    (records_dir / "records.json").write_text(json.dumps(records))
    out = base / "data" / "out"
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"),
               PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(ROOT))
    before_world, before_repo = snapshot(base), snapshot(ROOT)
    result = subprocess.run([sys.executable, str(ROOT / "fetch.py"), "../records/records.json", "--out",
                             "../data/out", "--no-progress", "--timeout", "2", "--retries", "0"],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    after_world = snapshot(base)
    changed = {p for p in set(before_world) | set(after_world) if before_world.get(p) != after_world.get(p)}
    outside = sorted(p for p in changed if not Path(p).is_relative_to(out) and Path(p) != out)
    assert outside == []
    assert snapshot(ROOT) == before_repo
    assert {Path(p).relative_to(out).parts[0] for p in changed if p != str(out)} >= \
        {"images", "manifest.jsonl", "failures.jsonl"}
    manifest = read_jsonl(out / "manifest.jsonl")
    assert sorted(e["id"] for e in manifest) == sorted(ids + ["../dup"])
    for entry in manifest:
        assert (out / entry["image_path"]).resolve().is_relative_to((out / "images").resolve())
    assert sorted(f["id"] for f in read_jsonl(out / "failures.jsonl")) == ["..", "../../missing"]
