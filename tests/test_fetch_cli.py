"""fetch.py: flags, one-line errors with exit code 2, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fetch_server import FetchServer, make_image  # noqa: E402

from mlx_clip.image_files import image_stem  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FETCH = str(REPO / "fetch.py")


@pytest.fixture(scope="module")
def fetch_server():
    """A FetchServer on 127.0.0.1 for this module's tests."""
    server = FetchServer().start()
    yield server
    server.stop()


def run_fetch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, FETCH, *args], capture_output=True, text=True, timeout=timeout,
        cwd=REPO,
    )


def test_help_explains_every_flag():
    result = run_fetch("--help")
    assert result.returncode == 0
    for flag in ["--sample", "--margin", "--stratify", "--seed", "--url-field", "--id-field",
                 "--path-field", "--concurrency", "--per-host", "--timeout", "--retries",
                 "--max-bytes", "--no-progress", "--out"]:
        assert flag in result.stdout


@pytest.mark.parametrize(
    "name, text, extra, message",
    [
        ("records.json", json.dumps([{"image_url": "http://127.0.0.1:9/a.jpg"}, {"title": "x"}]),
         [], "records.json: record 2: field 'image_url' is missing"),
        ("records.json", "", [], "records.json: file is empty"),
        ("records.jsonl", '{"image_url": "http://127.0.0.1:9/a.jpg"}\n{"image_url": \n', [],
         "records.jsonl: line 2: invalid JSON"),
        ("records.csv", "id,image_url\n1,http://127.0.0.1:9/a.jpg\n2,http://127.0.0.1:9/b.jpg,x\n",
         [], "records.csv: line 3: row has 3 fields, the header has 2"),
        ("records.json", json.dumps({"a": {"image_url": "http://127.0.0.1:9/a.jpg"}}), [],
         "records.json: the JSON object maps keys to objects"),
        ("records.json", json.dumps([{"u": "http://127.0.0.1:9/a.jpg", "k": i} for i in range(9)]),
         ["--sample", "2", "--stratify", "k"], "records.json: a stratified sample of 2 cannot"),
        ("records.json", json.dumps([{"u": "http://127.0.0.1:9/a.jpg"}]),
         ["--id-field", "inv"], "records.json: record 1: field 'inv' is missing or empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, name, text, extra, message):
    path = tmp_path / name
    path.write_text(text)
    result = run_fetch(str(path), "--out", str(tmp_path / "out"), "--no-progress", *extra)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {tmp_path}/{message}"), lines[0]


def test_missing_records_file(tmp_path):
    result = run_fetch(str(tmp_path / "nope.json"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.json'}: file not found"


def _records(server: FetchServer, count: int, prefix: str) -> list[dict]:
    records = []
    for i in range(count):
        name = f"{prefix}{i}"
        server.images[name] = make_image((i * 6 % 256, 100, 255 - i * 6 % 256))
        records.append({"id": name, "period": "roman" if i % 2 else "medieval",
                        "image_url": server.url(f"/img/{name}")})
    return records


def test_margin_prints_how_n_was_found(fetch_server, tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps(_records(fetch_server, 20, "margin")))
    result = run_fetch(str(path), "--margin", "0.1", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "20 records, margin 0.1 -> n = ceil(N / (1 + N e^2)) = 17" in result.stdout
    assert "17 of 17 records usable" in result.stdout
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 17


def _finished_files(out: Path) -> set[Path]:
    images = out / "images"
    return {p for p in images.rglob("*") if p.is_file() and p.suffix != ".part"}


def test_sigkill_then_rerun_gives_the_same_manifest(fetch_server, tmp_path):
    records = _records(fetch_server, 40, "kill")
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "killed"
    args = [str(path), "--sample", "30", "--seed", "5", "--no-progress", "--concurrency", "2",
            "--per-host", "2"]

    fetch_server.delay = 0.1  # 30 images, 2 at a time: about 1.5 s for the whole run
    process = subprocess.Popen([sys.executable, FETCH, *args, "--out", str(out)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not out.exists() or len(_finished_files(out)) < 6:
            assert process.poll() is None, "fetch.py ended before it could be killed"
            assert time.monotonic() < deadline, "no files appeared"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        fetch_server.delay = 0.0
        if process.poll() is None:
            process.kill()
    finished = _finished_files(out)
    assert 6 <= len(finished) < 30
    assert not (out / "manifest.jsonl").exists()

    result = run_fetch(*args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"already present  {len(finished)}" in result.stdout
    assert not list(out.rglob("*.part"))
    finished_stems = {p.stem for p in finished}
    for record in records:
        stem = image_stem(f"{record['id']}\n{record['image_url']}")
        hits = fetch_server.count(f"/img/{record['id']}")
        if stem in finished_stems:
            assert hits == 1, record["id"]  # not downloaded again
        else:
            assert hits <= 2  # at most once more than an interrupted request

    reference = tmp_path / "reference"
    result = run_fetch(*args, "--out", str(reference))
    assert result.returncode == 0, result.stderr
    manifest = (out / "manifest.jsonl").read_text()
    assert manifest == (reference / "manifest.jsonl").read_text()
    assert len(manifest.splitlines()) == 30
    for entry in map(json.loads, manifest.splitlines()):
        assert (out / entry["image_path"]).read_bytes() == fetch_server.images[entry["id"]]
