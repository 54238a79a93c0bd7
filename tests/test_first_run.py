"""A fresh clone's first hour: the main command runs on the bundled emoji set, every command
says its version, and a CSV saved by Excel on Windows is read with --encoding."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from mlx_clip import finetune
import mlx_clip
from mlx_clip.data.dataset import read_manifest
from mlx_clip.fetch import main as fetch_main
from mlx_clip.settings import FinetuneConfig
from mlx_clip.data.source import BUNDLED_CAPTION, BUNDLED_RECORDS, resolve_manifest, use_bundled_data

ROOT = Path(__file__).resolve().parents[1]


def test_main_command_runs_on_the_bundled_emoji_set_from_any_folder(tiny_hf, tmp_path):
    """`python finetune.py --sample N` with no data/records.json: one line says what it trains on,
    and the run is written (from a folder that is not the repository, so no path is cwd-relative)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "finetune.py"), "--model", str(tiny_hf), "--sample", "40", "--epochs", "1",
         "--batch-size", "8", "--name", "first", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    notice = [line for line in result.stdout.splitlines() if "bundled with mlx_clip" in line]
    assert notice == [f"no data/records.json: training on the emoji set bundled with mlx_clip "
                      f"({BUNDLED_RECORDS.parent}); for your own records pass --data RECORDS "
                      "(JSON, JSONL, CSV or an ImageFolder)"]
    run = tmp_path / "runs" / "first"
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == str(BUNDLED_RECORDS) and config["resolved"]["records"] == 40
    assert config["captions"] == [BUNDLED_CAPTION] and config["label_field"] == "category"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "zero_shot_acc" in json.dumps(metrics)  # labels came from the emoji categories
    assert (run / "model" / "config.json").is_file()
    items = read_manifest(tmp_path / "data" / "manifest.jsonl")
    assert len(items) == 40 and all(item.image_path.is_file() for item in items)
    assert "example caption: '" in result.stdout and ", an emoji of " in result.stdout


def test_bundled_set_only_when_no_records_were_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = use_bundled_data(FinetuneConfig(data=str(tmp_path / "mine.json")), say=print)
    assert named.data == str(tmp_path / "mine.json")  # a named file that is missing stays an error
    given = use_bundled_data(FinetuneConfig(manifest="m.jsonl"), say=print)
    assert given.data == FinetuneConfig.data and given.captions == []
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "records.json").write_text("[]")
    present = use_bundled_data(FinetuneConfig(), say=print)
    assert present.data == "data/records.json"  # the user's own default file wins
    (tmp_path / "data" / "records.json").unlink()
    asked = FinetuneConfig(captions=["{name}"], label_field="subcategory")
    own_caption = use_bundled_data(asked, say=print)
    assert asked.data == FinetuneConfig.data  # a new config; the one given is never changed
    assert own_caption.data == str(BUNDLED_RECORDS)
    assert (own_caption.captions, own_caption.label_field) == (["{name}"], "subcategory")  # the user's win


def test_wheel_ships_the_package_with_the_emoji_set_and_its_licences(tmp_path):
    """pip users get the default data too (and every subpackage); built from a copy of the sources."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "mlx_clip", source / "mlx_clip", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             str(source), "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    demo = "mlx_clip/demo/emoji/"
    records = [json.loads(line) for line in BUNDLED_RECORDS.read_text().splitlines()]
    assert len(records) == 1906 and {demo + r["image_path"] for r in records} <= names
    for name in ("records.jsonl", "README.md", "LICENSE-emoji-datasource", "LICENSE-noto-emoji-images"):
        assert demo + name in names, name
    assert {"mlx_clip/train/step.py", "mlx_clip/outputs/report/html.py", "mlx_clip/data/imagefolder.py"} <= names
    assert "Description-Content-Type: text/markdown" in metadata and "Requires-Dist: huggingface_hub>=0.25" in metadata


@pytest.mark.parametrize("script", ["fetch.py", "finetune.py", "convert.py", "curve.py"])
def test_every_command_says_its_version(script):
    result = subprocess.run([sys.executable, str(ROOT / script), "--version"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mlx-clip-finetune {mlx_clip.__version__}"


def write_cp1252_csv(folder: Path) -> Path:
    """A CSV as Excel on Windows saves it: cp1252 (curly quotes, é, €), with local image paths."""
    (folder / "img").mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (8, 8), "green").save(folder / "img" / f"{name}.png")
    text = "id,title,path\r\na,\u201cCaf\u00e9\u201d sign \u20ac5,img/a.png\r\nb,plain,img/b.png\r\n"
    path = folder / "data.csv"
    path.write_bytes(text.encode("cp1252"))
    return path


def test_cp1252_csv_needs_encoding_and_the_error_names_it(tmp_path, capsys):
    path = write_cp1252_csv(tmp_path)
    args = [str(path), "--path-field", "path", "--out", str(tmp_path / "out"), "--no-progress"]
    assert fetch_main(args) == 2
    offset = path.read_bytes().index(b"\x93")
    assert capsys.readouterr().err == (f"error: {path}: not UTF-8 text (byte 0x93 at offset {offset}); "
                                       "if it was saved by Excel on Windows, pass --encoding cp1252\n")
    assert fetch_main(args + ["--encoding", "cp1252"]) == 0
    first = json.loads((tmp_path / "out" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["title"] == "\u201cCaf\u00e9\u201d sign \u20ac5"


def test_finetune_passes_encoding_to_the_fetch(tmp_path):
    path = write_cp1252_csv(tmp_path)
    args = finetune.build_parser().parse_args(["--data", str(path), "--path-field", "path", "--encoding",
                                               "windows-1252", "--out", str(tmp_path / "out"), "--batch-size", "1"])
    config = finetune.config_from_args(args)
    assert config.fetch.encoding == "cp1252"
    items = read_manifest(resolve_manifest(config, say=lambda line: None))
    assert [item.record["title"] for item in items] == ["\u201cCaf\u00e9\u201d sign \u20ac5", "plain"]


def test_finetune_parses_a_sampled_records_file_once(tmp_path, monkeypatch):
    """--data records.json --sample N: the records are checked before the fetch and then fetched,
    from one parse (a 72,000-record JSON takes seconds and hundreds of MB to parse)."""
    from mlx_clip.data import records as records_module

    (tmp_path / "img").mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "img" / f"{i}.png")
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"id": f"r{i}", "title": f"red {i}", "path": f"img/{i}.png"} for i in range(6)]))
    parses = []
    parse = records_module._read_json_or_jsonl
    monkeypatch.setattr(records_module, "_read_json_or_jsonl", lambda *a: parses.append(a[0]) or parse(*a))
    args = finetune.build_parser().parse_args(["--data", str(path), "--path-field", "path", "--sample", "4",
                                               "--caption", "{title}", "--out", str(tmp_path / "out"),
                                               "--batch-size", "1"])
    items = read_manifest(resolve_manifest(finetune.config_from_args(args), say=lambda line: None))
    assert len(items) == 4 and {item.record["title"] for item in items} <= {f"red {i}" for i in range(6)}
    assert parses == [path]


def test_utf8_with_byte_order_mark_needs_no_flag(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), "green").save(tmp_path / "img" / "a.png")
    path = tmp_path / "bom.csv"
    path.write_bytes("id,title,path\na,Caf\u00e9,img/a.png\n".encode("utf-8-sig"))
    assert fetch_main([str(path), "--path-field", "path", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    first = json.loads((tmp_path / "out" / "manifest.jsonl").read_text(encoding="utf-8"))
    assert (first["id"], first["title"]) == ("a", "Caf\u00e9")
