"""mlx_clip.io is the one atomic write: every file lands whole or not at all, follows the umask,
and a failure names the real file and leaves no temporary file; no other module writes its own
temp-and-rename."""

import ast
import errno
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_clip import io

PACKAGE = Path(__file__).resolve().parents[1] / "mlx_clip"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o007])
def test_every_writer_follows_the_umask_and_leaves_no_part_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.write_json(tmp_path / "a.json", {"é": 1})
        io.write_jsonl(tmp_path / "a.jsonl", [{"a": 1}, {"b": "\ud800"}])
        io.write_text(tmp_path / "a.txt", "x\n")
        io.write_bytes(tmp_path / "a.bin", b"\0\1")
        io.write_safetensors(tmp_path / "a.safetensors", {"w": mx.arange(3.0)}, {"format": "mlx"})
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.json", "a.jsonl", "a.safetensors", "a.txt"]
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o666 & ~umask}
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{\n  "é": 1\n}\n'
    assert (tmp_path / "a.jsonl").read_text() == '{"a": 1}\n{"b": "\\ud800"}\n'
    assert np.array_equal(np.array(mx.load(str(tmp_path / "a.safetensors"))["w"]), [0.0, 1.0, 2.0])


def test_failure_in_the_block_keeps_the_old_file_and_names_the_real_one(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(OSError) as err:
        with io.atomic_file(target, "w") as handle:
            handle.write("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert err.value.filename == str(target) and err.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"] and target.read_text() == "old"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C: no half file either
        with io.atomic_file(target) as handle:
            handle.write(b"half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"] and target.read_text() == "old"


def test_a_missing_folder_names_the_file_not_its_temporary_name(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        io.write_json(tmp_path / "nope" / "config.json", {})
    assert err.value.filename == str(tmp_path / "nope" / "config.json")


def test_durable_name_fsyncs_the_folder(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(io, "fsync_folder", lambda folder: synced.append(Path(folder)))
    with io.atomic_file(tmp_path / "plain", "w") as handle:
        handle.write("x")
    with io.atomic_file(tmp_path / "latest", "w", durable_name=True) as handle:
        handle.write("epoch-0001\n")
    assert synced == [tmp_path]


def test_no_other_module_renames_a_file_into_place():
    """os.replace / Path.replace / mkstemp / NamedTemporaryFile belong to io.py; the checkpoint
    folder's rename (a folder, not a file) is the one exception."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "io.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                is_path_replace = name == "replace" and len(node.args) == 1 and not node.keywords \
                    and not isinstance(node.args[0], ast.Constant)
                if name in ("mkstemp", "NamedTemporaryFile", "rename") or is_path_replace or \
                        (name == "replace" and ast.unparse(node.func) == "os.replace"):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    # export moves the files it wrote whole in a staging folder into place (outputs/export.py)
    assert [f for f in found if not f.startswith("outputs/export.py:")] == ["train/checkpoint.py:59: os.replace(tmp, final)"]
