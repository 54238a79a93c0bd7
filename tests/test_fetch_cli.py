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
from fetch_server import FetchServer, make_dds_unimplemented, make_image, make_noise_png  # noqa: E402

from mlx_clip.data.image_files import image_stem  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FETCH = str(REPO / "fetch.py")


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
                 "--max-bytes", "--no-progress", "--out", "--deadline", "--allow-private"]:
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


@pytest.mark.parametrize("flag, value", [("--timeout", "0"), ("--timeout", "-1"),
                                         ("--deadline", "0"), ("--deadline", "-5"),
                                         ("--deadline", "nan")])
def test_timeouts_at_or_below_zero_are_refused(tmp_path, flag, value):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"image_url": "http://127.0.0.1:9/a.jpg"}]))
    result = run_fetch(str(path), "--out", str(tmp_path / "out"), flag, value)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {flag} must be a number of seconds above 0, got {value}"
    assert not (tmp_path / "out").exists()


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


def test_a_catalogue_of_bad_records_ends_in_a_manifest(fetch_server, tmp_path):
    """Every record that stopped a run before, at once, against a trickling server too."""
    fetch_server.images["acc-dds"] = make_dds_unimplemented()
    fetch_server.images["acc-trickle"] = make_noise_png(32)
    for name in ("acc-good", "acc-retry", "acc-emoji", "acc-private"):
        fetch_server.images[name] = make_image((10, 20, 30))
    records = [
        {"id": "good", "title": "ok", "image_url": fetch_server.url("/img/acc-good")},
        {"id": "typo", "title": "x", "image_url": "http://images.example..org/a.jpg"},
        {"id": "long", "title": "x", "image_url": f"http://{'a' * 64}.example.org/a.jpg"},
        {"id": "retry", "title": "x", "image_url": fetch_server.url("/bad-retry-after/acc-retry")},
        {"id": "dds", "title": "x", "image_url": fetch_server.url("/img/acc-dds")},
        {"id": "emoji", "title": "Vase \ud83d", "image_url": fetch_server.url("/img/acc-emoji")},
        {"id": "trickle", "title": "x", "image_url": fetch_server.url("/trickle/acc-trickle")},
        {"id": "private", "title": "x",
         "image_url": fetch_server.url("/redirect-private/acc-private")},
    ]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "out"
    started = time.monotonic()
    result = run_fetch(str(path), "--out", str(out), "--no-progress", "--timeout", "1",
                       "--deadline", "3", "--retries", "1")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert elapsed < 3 + 4, elapsed  # interpreter start-up plus the deadline
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e["id"] for e in manifest] == ["good", "retry", "emoji", "private"]
    assert manifest[2]["title"] == "Vase \ud83d"
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {f["id"]: f["reason"] for f in failures} == {
        "typo": "bad_url", "long": "bad_url", "dds": "decode_error", "trickle": "deadline"}


def test_a_second_fetch_on_the_same_folder_is_refused(fetch_server, tmp_path):
    records = _records(fetch_server, 8, "lock")
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "out"
    args = [str(path), "--out", str(out), "--no-progress", "--concurrency", "1"]
    fetch_server.delay = 0.25  # 8 images one at a time: about 2 s
    first = subprocess.Popen([sys.executable, FETCH, *args], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        lock = out / ".fetch.lock"
        while not (lock.exists() and lock.read_text() == f"{first.pid}\n"):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first fetch never took the lock"
            time.sleep(0.01)
        second = run_fetch(*args)
        assert first.poll() is None, "the first fetch ended before the second one was tried"
        stdout, stderr = first.communicate(timeout=60)
    finally:
        fetch_server.delay = 0.0
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"error: {out}: another fetch (pid {first.pid}) is writing to this folder; "
        "wait for it to finish or pass another --out")
    assert first.returncode == 0, stderr
    assert "8 of 8 records usable" in stdout
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 8


def test_a_full_disk_is_one_line(monkeypatch, tmp_path, capsys):
    """A disk filling up while fetch.py writes (manifest, images) ends with one line, exit 2."""
    import errno

    from mlx_clip import fetch

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "manifest.jsonl"))

    monkeypatch.setattr(fetch, "fetch_records", full)
    records = tmp_path / "records.json"
    records.write_text('[{"id": "a", "image_url": "http://127.0.0.1:9/a.jpg"}]', encoding="utf-8")
    assert fetch.main([str(records), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'out' / 'manifest.jsonl'}: No space left on device; free space, then "
                   "run the same command again (finished images are kept)"]
