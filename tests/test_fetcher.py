"""fetcher: downloads against a real aiohttp server on 127.0.0.1 with routes that fail."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fetch_server import (  # noqa: E402
    FetchServer, make_dds_unimplemented, make_image, make_noise_png,
)

from mlx_clip.errors import InputError  # noqa: E402
from mlx_clip.data.download import parse_retry_after
from mlx_clip.data.fetch_config import FetchConfig
from mlx_clip.data.fetcher import fetch_records, lock_output_folder
from mlx_clip.data.image_files import ImageProblem, image_file, inspect_image
from mlx_clip.data.redirect_guard import is_private_address
from mlx_clip.io import write_jsonl


def fast_config(out: Path, **overrides) -> FetchConfig:
    """Small timeouts and backoff so failing routes resolve in about a second."""
    settings = dict(
        out=out, connect_timeout=1.0, read_timeout=0.3, retries=2, backoff=0.01,
        max_backoff=0.05, max_retry_after=5.0, max_bytes=100_000, progress=False,
    )
    settings.update(overrides)
    return FetchConfig(**settings)


def write_json(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200),
          (200, 30, 200), (120, 60, 10), (10, 60, 120), (250, 250, 250), (5, 5, 5)]


class Scenario:
    """One fetch run over records that hit every route, shared by the tests below."""

    def __init__(self, server: FetchServer, root: Path):
        self.server = server
        self.root = root
        self.records: list[dict] = []
        self.expected_failures: dict[str, str] = {}

    def add(self, record_id: str, path: str | None, name: str | None = None,
            color=None, fmt: str = "PNG", fails: str | None = None) -> None:
        if name is not None and name not in self.server.images:
            self.server.images[name] = make_image(color, fmt) if color else make_noise_png()
        url = self.server.url(path) if path and path.startswith("/") else path
        self.records.append({"id": record_id, "title": f"object {record_id}",
                             "image_url": url, "name": name, "color": color})
        if fails:
            self.expected_failures[record_id] = fails


@pytest.fixture(scope="module")
def scenario(fetch_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("scenario")
    s = Scenario(fetch_server, root)
    formats = ["PNG", "JPEG", "WEBP", "GIF", "PNG"]
    for i, fmt in enumerate(formats):
        s.add(f"good{i}", f"/img/good{i}", f"good{i}", COLORS[i], fmt)
    s.add("flaky", "/flaky/flaky", "flaky", COLORS[5])
    s.add("ratelimited", "/ratelimited/rl", "rl", COLORS[6])
    s.add("redirect", "/redirect/redir", "redir", COLORS[7])
    s.add("reset-once", "/reset-once/ro", "ro", COLORS[8])
    for i in range(6):  # different images, same last path segment
        s.add(f"iiif{i}", f"/iiif/iiif{i}/full/675,/0/default.jpg", f"iiif{i}",
              (40 * i, 255 - 40 * i, 100), "JPEG")
    s.add("dup-a", "/img/dup", "dup", COLORS[9])
    s.add("dup-b", "/img/dup", "dup", COLORS[9])
    s.add("../../escape", "/img/trav1", "trav1", COLORS[0])
    s.add("/tmp/absolute", "/img/trav2", "trav2", COLORS[1])
    s.add("..\\..\\windows", "/img/trav3", "trav3", COLORS[2])
    s.add("missing", "/missing/nothing", fails="http_404")
    s.add("error500", "/error500/x", fails="http_500")
    s.add("slow", "/slow/slowimg", "slowimg", COLORS[3], fails="timeout")
    s.add("truncated", "/truncated/noise", "noise", fails="truncated_image")
    s.add("html", "/html/page", fails="not_an_image")
    s.add("redirect-loop", "/redirect-loop", fails="too_many_redirects")
    s.add("big", "/big", fails="too_large")
    s.add("big-chunked", "/big-chunked", fails="too_large")
    s.add("reset", "/reset/resetimg", "resetimg", COLORS[4], fails="connection_error")
    s.add("ftp", "ftp://127.0.0.1/image.png", fails="bad_scheme")
    s.add("file", "file:///etc/passwd", fails="bad_scheme")
    s.add("no-url", None, fails="missing_url")

    records_path = write_json(root / "records.json", s.records)
    s.out = root / "out"
    before = files_under(root)
    s.summary = fetch_records(records_path, fast_config(s.out))
    s.new_files = files_under(root) - before
    s.manifest = read_jsonl(s.out / "manifest.jsonl")
    s.failures = read_jsonl(s.out / "failures.jsonl")
    return s


def test_every_good_image_is_in_the_manifest_with_its_own_pixels(scenario):
    good_ids = [r["id"] for r in scenario.records if r["id"] not in scenario.expected_failures]
    assert [e["id"] for e in scenario.manifest] == good_ids  # the records' order is kept
    for entry in scenario.manifest:
        path = scenario.out / entry["image_path"]
        data = path.read_bytes()
        served = scenario.server.images[entry["name"]]
        assert data == served
        assert entry["sha256"] == hashlib.sha256(served).hexdigest()
        with Image.open(path) as image:
            assert (entry["width"], entry["height"]) == image.size
            pixel = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
        assert all(abs(a - b) <= 12 for a, b in zip(pixel, entry["color"])), entry["id"]
        assert entry["title"] == f"object {entry['id']}"  # the record's metadata travels along


def test_every_bad_record_is_in_failures_with_its_reason(scenario):
    reasons = {f["id"]: f["reason"] for f in scenario.failures}
    assert reasons == scenario.expected_failures
    assert scenario.summary.failed_total == len(scenario.expected_failures)
    for failure in scenario.failures:
        assert set(failure) >= {"id", "record_index", "url", "reason", "detail"}
    assert scenario.summary.usable == len(scenario.manifest)


def test_file_type_comes_from_the_image_not_the_url(scenario):
    extensions = {e["id"]: Path(e["image_path"]).suffix for e in scenario.manifest}
    assert [extensions[f"good{i}"] for i in range(5)] == [".png", ".jpg", ".webp", ".gif", ".png"]
    assert extensions["iiif0"] == ".jpg"


def test_urls_ending_in_the_same_name_do_not_collide(scenario):
    paths = {e["image_path"] for e in scenario.manifest if e["id"].startswith("iiif")}
    assert len(paths) == 6


def test_duplicate_urls_are_fetched_once_and_kept_for_each_record(scenario):
    assert scenario.server.count("/img/dup") == 1
    dups = [e for e in scenario.manifest if e["id"] in ("dup-a", "dup-b")]
    assert len(dups) == 2
    assert dups[0]["sha256"] == dups[1]["sha256"]


def test_retries_follow_the_rules(scenario):
    count = scenario.server.count
    assert count("/flaky/flaky") == 2  # 500 then success
    assert count("/ratelimited/rl") == 2
    assert count("/reset-once/ro") == 2
    assert count("/missing/nothing") == 1  # 404 is not retried
    assert count("/error500/x") == 3  # 1 + retries=2
    assert count("/slow/slowimg") == 3
    assert count("/reset/resetimg") == 3


def test_retry_after_is_honoured(scenario):
    first, second = scenario.server.hit_times["/ratelimited/rl"]
    assert second - first >= 0.9  # Retry-After: 1


def test_nothing_is_written_outside_the_output_folder(scenario):
    out = scenario.out.resolve()
    assert scenario.new_files
    for path in scenario.new_files:
        assert path.resolve().is_relative_to(out), path
    for entry in scenario.manifest:
        assert (scenario.out / entry["image_path"]).resolve().is_relative_to(out / "images")
    assert not list(scenario.out.rglob("*.part"))


def test_summary_counts(scenario):
    summary = scenario.summary
    assert summary.fetched == len(scenario.manifest)
    assert summary.already_present == 0
    assert summary.failed["too_large"] == 2
    assert "images/s" in str(summary)


def test_rerun_resumes_without_downloading_again(fetch_server, tmp_path):
    records = []
    for i in range(6):
        name = f"resume{i}"
        fetch_server.images[name] = make_image(COLORS[i])
        records.append({"id": i, "image_url": fetch_server.url(f"/img/{name}")})
    records.append({"id": "gone", "image_url": fetch_server.url("/missing/gone")})
    records_path = write_json(tmp_path / "records.json", records)
    out = tmp_path / "out"
    first = fetch_records(records_path, fast_config(out))
    manifest = (out / "manifest.jsonl").read_text()
    assert first.fetched == 6
    # An interrupted run's leftovers: a stale partial file and a damaged image.
    stale = out / "images" / "00" / "stale.jpg.abc.part"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half")
    damaged = out / read_jsonl(out / "manifest.jsonl")[0]["image_path"]
    damaged.write_bytes(damaged.read_bytes()[:20])

    second = fetch_records(records_path, fast_config(out))
    assert (second.fetched, second.already_present) == (1, 5)
    assert second.removed_partial_files == 1 and not stale.exists()
    assert (out / "manifest.jsonl").read_text() == manifest
    assert fetch_server.count("/img/resume0") == 2  # only the damaged one again
    assert all(fetch_server.count(f"/img/resume{i}") == 1 for i in range(1, 6))
    assert read_jsonl(out / "failures.jsonl")[0]["reason"] == "http_404"


def test_sample_is_fetched_in_sample_order(fetch_server, tmp_path):
    records = []
    for i in range(30):
        fetch_server.images[f"s{i}"] = make_image((i, i, i))
        records.append({"id": f"s{i}", "image_url": fetch_server.url(f"/img/s{i}"),
                        "kind": "a" if i % 3 else "b"})
    records_path = write_json(tmp_path / "records.json", records)
    summary = fetch_records(records_path, fast_config(tmp_path / "out"), sample=9,
                            stratify="kind", seed=3)
    manifest = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    ids = [int(e["id"][1:]) for e in manifest]
    assert len(ids) == 9 and ids == sorted(ids)
    assert sum(e["kind"] == "b" for e in manifest) == 3
    assert "stratified by 'kind'" in summary.sample_explanation


def test_record_fields_named_like_manifest_keys_are_kept(fetch_server, tmp_path):
    fetch_server.images["clash"] = make_image(COLORS[0], size=(20, 10))
    records = [{"id": "c", "width": "12 cm", "sha256": "abc", "image_path": "old/x.jpg",
                "image_url": fetch_server.url("/img/clash")}]
    records_path = write_json(tmp_path / "records.json", records)
    fetch_records(records_path, fast_config(tmp_path / "out"))
    [entry] = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert (entry["width"], entry["height"]) == (20, 10)
    assert entry["record_width"] == "12 cm"
    assert entry["record_sha256"] == "abc" and entry["record_image_path"] == "old/x.jpg"
    assert entry["image_path"].startswith("images/")


def test_requests_in_flight_stay_within_the_per_host_limit(tmp_path):
    server = FetchServer().start()  # its own server, so other tests' traffic does not count
    try:
        server.delay = 0.05
        records = []
        for i in range(12):
            server.images[f"c{i}"] = make_image(COLORS[i % len(COLORS)])
            records.append({"id": i, "image_url": server.url(f"/img/c{i}")})
        records_path = write_json(tmp_path / "records.json", records)
        summary = fetch_records(records_path, fast_config(tmp_path / "out", per_host=3))
        assert summary.fetched == 12
        assert server.max_in_flight == 3
    finally:
        server.stop()


def test_local_images_with_path_field(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(make_image(COLORS[0]))
    (tmp_path / "pics" / "bad.png").write_text("<html>nope</html>")
    records = [
        {"id": "a", "image_path": "pics/a.png"},
        {"id": "gone", "image_path": "pics/none.png"},
        {"id": "bad", "image_path": "pics/bad.png"},
    ]
    records_path = write_json(tmp_path / "records.json", records)
    out = tmp_path / "out"
    summary = fetch_records(records_path, fast_config(out, path_field="image_path"))
    assert summary.local == 1
    [entry] = read_jsonl(out / "manifest.jsonl")
    assert (out / entry["image_path"]).resolve() == (tmp_path / "pics" / "a.png").resolve()
    assert entry["width"] == 16
    reasons = {f["id"]: f["reason"] for f in read_jsonl(out / "failures.jsonl")}
    assert reasons == {"gone": "missing_file", "bad": "not_an_image"}
    assert not (out / "images").exists() or not any((out / "images").iterdir())


def test_missing_url_field_is_an_input_error(tmp_path):
    records_path = write_json(tmp_path / "records.json", [
        {"id": 1, "image_url": "http://127.0.0.1:9/a.jpg"},
        {"id": 2, "title": "no url here"},
    ])
    with pytest.raises(InputError) as error:
        fetch_records(records_path, fast_config(tmp_path / "out"), sample=1)
    assert str(error.value) == f"{records_path}: record 2: field 'image_url' is missing"


def test_parse_retry_after_seconds_and_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7", now) == 7.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("\u00b2", now) is None  # "²".isdigit() is True, float("²") fails
    assert parse_retry_after("Mon, 01 Jan 99999 00:00:00 GMT", now) is None
    assert parse_retry_after(None, now) is None


def test_inspect_image_reasons():
    assert inspect_image(make_image(COLORS[0], "JPEG")).extension == "jpg"
    with pytest.raises(ImageProblem) as html:
        inspect_image(b"<!DOCTYPE html><html></html>")
    assert html.value.reason == "not_an_image"
    noise = make_noise_png()
    with pytest.raises(ImageProblem) as cut:
        inspect_image(noise[: len(noise) // 2])
    assert cut.value.reason == "truncated_image"
    with pytest.raises(ImageProblem) as dds:  # Pillow raises NotImplementedError on this one
        inspect_image(make_dds_unimplemented())
    assert dds.value.reason == "decode_error" and "NotImplementedError" in dds.value.detail


def test_image_file_names_stay_inside(tmp_path):
    for key in ["../../x", "/etc/passwd", "a/../../b", "\0", "é" * 500]:
        path = image_file(tmp_path / "images", key, "jpg")
        assert path.resolve().is_relative_to((tmp_path / "images").resolve())
        assert len(path.name) == 44  # 40 hex + ".jpg"


def test_refuses_to_overwrite_its_own_input(tmp_path):
    """Sampling a manifest into the folder it lives in would overwrite it: refused, file intact."""
    from mlx_clip.errors import InputError
    from mlx_clip.data.fetch_config import FetchConfig
    from mlx_clip.data.fetcher import fetch_records

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"id": 1, "image_path": "a.png"}\n')
    with pytest.raises(InputError, match="manifest.jsonl this run would write"):
        fetch_records(manifest, FetchConfig(out=tmp_path, path_field="image_path"), sample=1)
    assert manifest.read_text() == '{"id": 1, "image_path": "a.png"}\n'


# -- one bad record never stops the run ------------------------------------------------------

LONG_LABEL = "a" * 64


@pytest.mark.parametrize("bad_url, reason", [
    ("http://images.example..org/a.jpg", "bad_url"),
    (f"http://{LONG_LABEL}.example.org/a.jpg", "bad_url"),
    ("http://\ud83d.example.org/a.jpg", "bad_url"),
    ("/img/dds-broken", "decode_error"),
    ("http://127.0.0.1:9/a.jpg|http://127.0.0.1:9/b.jpg", "several_urls"),  # one CSV cell, two images
])
def test_one_bad_record_is_one_failure_line(fetch_server, tmp_path, bad_url, reason):
    """Each of these stopped the whole run with a traceback (no manifest) before."""
    fetch_server.images["dds-broken"] = make_dds_unimplemented()
    fetch_server.images["ok1"] = make_image(COLORS[0])
    url = fetch_server.url(bad_url) if bad_url.startswith("/") else bad_url
    records_path = write_json(tmp_path / "records.json", [
        {"id": "good", "image_url": fetch_server.url("/img/ok1")},
        {"id": "bad", "image_url": url},
    ])
    summary = fetch_records(records_path, fast_config(tmp_path / "out"))
    assert [e["id"] for e in read_jsonl(tmp_path / "out" / "manifest.jsonl")] == ["good"]
    [failure] = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert (failure["id"], failure["reason"], failure["url"]) == ("bad", reason, url)
    assert failure["detail"]
    assert summary.failed == {reason: 1}


def test_unparsable_retry_after_falls_back_to_backoff(fetch_server, tmp_path):
    fetch_server.images["bra"] = make_image(COLORS[1])
    records_path = write_json(tmp_path / "records.json", [
        {"id": "r", "image_url": fetch_server.url("/bad-retry-after/bra")}])
    summary = fetch_records(records_path, fast_config(tmp_path / "out"))
    assert summary.fetched == 1
    assert fetch_server.count("/bad-retry-after/bra") == 2


def test_any_error_in_a_record_fails_that_record_only(fetch_server, tmp_path, monkeypatch):
    """An exception nobody foresaw (here from inspecting one image) fails only its record."""
    import mlx_clip.data.fetch_jobs as fetcher  # where each job's image is inspected

    fetch_server.images["ok2"] = make_image(COLORS[2])
    fetch_server.images["boom"] = make_image(COLORS[3], size=(17, 5))
    real = fetcher.inspect_image

    def inspect(data: bytes):
        info = real(data)
        if info.width == 17:
            raise KeyError("unforeseen")
        return info

    monkeypatch.setattr(fetcher, "inspect_image", inspect)
    records_path = write_json(tmp_path / "records.json", [
        {"id": "boom", "image_url": fetch_server.url("/img/boom")},
        {"id": "good", "image_url": fetch_server.url("/img/ok2")},
    ])
    fetch_records(records_path, fast_config(tmp_path / "out"))
    assert [e["id"] for e in read_jsonl(tmp_path / "out" / "manifest.jsonl")] == ["good"]
    [failure] = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert (failure["id"], failure["reason"]) == ("boom", "error")
    assert "KeyError" in failure["detail"]


def test_lone_surrogates_are_written_escaped_and_read_back(fetch_server, tmp_path):
    fetch_server.images["emoji"] = make_image(COLORS[4])
    cut = "Vase \ud83d"  # a title cut in the middle of an emoji
    records_path = tmp_path / "records.json"
    records_path.write_text(json.dumps([
        {"id": "v\ud83d", "title": cut, "image_url": fetch_server.url("/img/emoji")},
        {"id": "gone\udc00", "title": cut, "image_url": fetch_server.url("/missing/x")},
        {"id": "plain", "title": "Krug \u00e9\U0001f3fa", "image_url": fetch_server.url("/img/emoji")},
    ]))
    fetch_records(records_path, fast_config(tmp_path / "out"))
    manifest_text = (tmp_path / "out" / "manifest.jsonl").read_text(encoding="utf-8")
    manifest = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert [(e["id"], e["title"]) for e in manifest] == [("v\ud83d", cut), ("plain", "Krug \u00e9\U0001f3fa")]
    assert "Krug \u00e9\U0001f3fa" in manifest_text  # rows without surrogates stay readable
    [failure] = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert failure["id"] == "gone\udc00" and failure["reason"] == "http_404"
    assert manifest[0]["image_path"] != manifest[1]["image_path"]


def test_write_jsonl_escapes_only_rows_that_need_it(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"a": "\u00e9"}, {"\udcff": "x\ud800"}])
    assert path.read_bytes() == '{"a": "\u00e9"}\n{"\\udcff": "x\\ud800"}\n'.encode("utf-8")
    assert read_jsonl(path) == [{"a": "\u00e9"}, {"\udcff": "x\ud800"}]


# -- deadline ----------------------------------------------------------------------------------

def test_trickling_server_is_cut_at_the_deadline(fetch_server, tmp_path):
    """A byte every 0.2 s never trips the idle timeout; the deadline ends it, retries included."""
    fetch_server.images["trickle"] = make_noise_png(32)  # ~3 kB, 50 bytes of it sent in 10 s
    fetch_server.images["ok3"] = make_image(COLORS[5])
    records_path = write_json(tmp_path / "records.json", [
        {"id": "t", "image_url": fetch_server.url("/trickle/trickle")},
        {"id": "good", "image_url": fetch_server.url("/img/ok3")},
    ])
    started = time.monotonic()
    summary = fetch_records(records_path, fast_config(tmp_path / "out", read_timeout=1.0,
                                                      deadline=1.5, retries=1))
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + 1.5, elapsed
    [failure] = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert (failure["id"], failure["reason"]) == ("t", "deadline")
    assert summary.fetched == 1


def test_no_wait_for_a_retry_past_the_deadline(fetch_server, tmp_path):
    """Retry-After: 1 with 0.5 s left: give up now rather than sleep past the deadline."""
    fetch_server.images["late"] = make_image(COLORS[6])
    records_path = write_json(tmp_path / "records.json", [
        {"id": "late", "image_url": fetch_server.url("/ratelimited/late")}])
    started = time.monotonic()
    fetch_records(records_path, fast_config(tmp_path / "out", deadline=0.5))
    assert time.monotonic() - started < 0.9
    [failure] = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert failure["reason"] == "http_429" and "no time left" in failure["detail"]


@pytest.mark.parametrize("field", ["read_timeout", "deadline", "connect_timeout"])
@pytest.mark.parametrize("value", [0, -1.0])
def test_timeouts_must_be_positive(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        fast_config(tmp_path, **{field: value})


# -- lock, permissions -------------------------------------------------------------------------

def test_a_locked_output_folder_is_refused_with_the_holder(fetch_server, tmp_path):
    fetch_server.images["ok4"] = make_image(COLORS[6])
    records_path = write_json(tmp_path / "records.json", [
        {"id": "a", "image_url": fetch_server.url("/img/ok4")}])
    out = tmp_path / "out"
    out.mkdir()
    with lock_output_folder(out):
        assert (out / ".fetch.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(InputError, match=f"another fetch \\(pid {os.getpid()}\\)"):
            fetch_records(records_path, fast_config(out))
        assert not (out / "manifest.jsonl").exists()
    assert fetch_records(records_path, fast_config(out)).fetched == 1  # released


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_follow_the_umask(fetch_server, tmp_path, umask):
    fetch_server.images["ok5"] = make_image(COLORS[7])
    records_path = write_json(tmp_path / "records.json", [
        {"id": "a", "image_url": fetch_server.url("/img/ok5")},
        {"id": "b", "image_url": fetch_server.url("/missing/b")}])
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        fetch_records(records_path, fast_config(out))
    finally:
        os.umask(old)
    [entry] = read_jsonl(out / "manifest.jsonl")
    for path in [out / entry["image_path"], out / "manifest.jsonl", out / "failures.jsonl",
                 out / ".fetch.lock"]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


# -- redirects to private addresses ------------------------------------------------------------

def public_127(address) -> bool:
    """The tests' stand-in for the internet: 127.0.0.1 counts as public, the rest as usual."""
    return address != ipaddress.ip_address("127.0.0.1") and is_private_address(address)


def test_is_private_address():
    private = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
               "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
               "::ffff:10.0.0.1"]
    public = ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"]
    for text in private:
        assert is_private_address(ipaddress.ip_address(text)), text
    for text in public:
        assert not is_private_address(ipaddress.ip_address(text)), text


def test_redirect_from_public_to_private_is_refused(fetch_server, tmp_path):
    if not fetch_server.has_private:
        pytest.skip("cannot bind 127.0.0.2 here")
    for name in ("rp1", "rp2", "rp3"):
        fetch_server.images[name] = make_image(COLORS[8])
    records_path = write_json(tmp_path / "records.json", [
        {"id": "redirected", "image_url": fetch_server.url("/redirect-private/rp1")},
        {"id": "direct", "image_url": fetch_server.private_url("/img/rp2")},
        {"id": "private-origin", "image_url": fetch_server.private_url("/redirect-private/rp3")},
        {"id": "public-redirect", "image_url": fetch_server.url("/redirect/rp3")},
    ])
    out = tmp_path / "out"
    fetch_records(records_path, fast_config(out, private_address=public_127))
    [failure] = read_jsonl(out / "failures.jsonl")
    assert (failure["id"], failure["reason"]) == ("redirected", "redirect_private")
    assert "127.0.0.2" in failure["detail"]
    assert fetch_server.count("/img/rp1") == 0  # nothing was sent to the private address
    assert [e["id"] for e in read_jsonl(out / "manifest.jsonl")] == [
        "direct", "private-origin", "public-redirect"]

    allowed = tmp_path / "allowed"
    summary = fetch_records(records_path, fast_config(allowed, private_address=public_127,
                                                      allow_private=True))
    assert summary.fetched == 4 and fetch_server.count("/img/rp1") == 1


class FakeDNS:
    """A DNS server under ``socket.getaddrinfo`` (what aiohttp's resolver and the system use): each
    name in ``answers`` gets its addresses in turn, the last one again and again."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.asked: Counter[str] = Counter()
        self._real = socket.getaddrinfo
        self._lock = threading.Lock()

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        if host not in self.answers:
            return self._real(host, port, family, type, proto, flags)
        with self._lock:
            self.asked[host] += 1
            addresses = self.answers[host]
            address = addresses[min(self.asked[host], len(addresses)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]


def test_dns_rebinding_cannot_send_a_redirect_to_a_private_address(fetch_server, tmp_path, monkeypatch):
    """A name answering a public address first and a loopback one after (DNS rebinding) gets no
    redirected request to the loopback address: the address checked is the address connected."""
    if not fetch_server.has_private:
        pytest.skip("cannot bind 127.0.0.2 here")
    rebinding = ["127.0.0.1", "127.0.0.2"]  # public (in these tests), then loopback
    dns = FakeDNS({"evil.rebind.test": rebinding, "target.rebind.test": rebinding,
                   "catalogue.lan.test": ["127.0.0.2"]})
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    for name in ("rb1", "rb2", "rb3"):
        fetch_server.images[name] = make_image(COLORS[9])
    def to_itself(host: str, name: str) -> str:
        return f"http://{host}:{fetch_server.port}/redirect-host/{host}/{name}"

    records_path = write_json(tmp_path / "records.json", [
        # a public host that redirects to itself, rebound to 127.0.0.2 by then
        {"id": "rebinds-itself", "image_url": to_itself("evil.rebind.test", "rb1")},
        # a public host redirecting to a name that rebinds after its first answer
        {"id": "rebinds-target", "image_url": fetch_server.url("/redirect-host/target.rebind.test/rb2")},
        # a catalogue on the local network, by name, may still redirect to itself
        {"id": "private-catalogue", "image_url": to_itself("catalogue.lan.test", "rb3")},
    ])
    out = tmp_path / "out"
    fetch_records(records_path, fast_config(out, private_address=public_127))
    [failure] = read_jsonl(out / "failures.jsonl")
    assert (failure["id"], failure["reason"]) == ("rebinds-itself", "redirect_private")
    assert failure["detail"].startswith(
        "evil.rebind.test redirected to evil.rebind.test (127.0.0.2), a private address; pass --allow-private")
    assert [e["id"] for e in read_jsonl(out / "manifest.jsonl")] == ["rebinds-target", "private-catalogue"]
    assert fetch_server.count("/img/rb1") == 0
    assert fetch_server.private_hits["/img/rb2"] == 0 and fetch_server.count("/img/rb2") == 1
    assert fetch_server.private_hits["/img/rb3"] == 1
