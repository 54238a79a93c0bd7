"""Run folders: a run name is one folder under --runs-dir, one process writes a run folder at a
time, unnamed runs never share a folder, and a lock file is never followed through a link."""

import os
from datetime import datetime

import pytest

from mlx_clip import curve, finetune
from mlx_clip.data.fetcher import lock_output_folder
from mlx_clip.errors import InputError
from mlx_clip.run import folder
from mlx_clip.run.folder import claim_run_folder, lock_run_folder

BAD_NAMES = ["..", ".", "a/b", "../escape", "/tmp/absolute", "", ".hidden"]


def _args(tiny_hf, manifest, runs, *extra):
    return ["--model", str(tiny_hf), "--manifest", str(manifest), "--runs-dir", str(runs), "--caption",
            "a {colour} {shape}", "--val-fraction", "0.2", "--batch-size", "32", "--no-progress", *extra]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_run_name_that_is_not_one_folder_is_refused_in_one_line(tiny_hf, shapes_manifest, tmp_path, capsys, name):
    runs = tmp_path / "area" / "runs"
    before = sorted(tmp_path.rglob("*"))
    for main, extra in ((finetune.main, ["--epochs", "1"]), (curve.main, ["--sizes", "8"])):
        assert main(_args(tiny_hf, shapes_manifest, runs, "--name", name, *extra)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --name") and err.count("\n") == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, above --runs-dir or in it


def test_resume_with_a_name_outside_runs_dir_is_refused(tiny_hf, shapes_manifest, tmp_path, capsys):
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path / "runs", "--name", "..", "--resume")) == 2
    assert "error: --name '..'" in capsys.readouterr().err


def test_a_resumed_run_folder_spelled_with_dot_dot_is_refused(tmp_path):
    """--resume RUNS/a/.. names runs/ itself as the run folder: its name '..' is no run name."""
    import json

    from mlx_clip.settings import FinetuneConfig

    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "checkpoints" / "epoch-1").mkdir(parents=True)
    (runs / "checkpoints" / "latest").write_text("epoch-1")
    (runs / "config.json").write_text(json.dumps(FinetuneConfig().to_dict()))
    with pytest.raises(InputError, match="--resume's run folder '..': a run name is one folder name"):
        folder.resume_config(FinetuneConfig(runs_dir=str(runs)), str(runs / "a" / ".."))


def test_a_second_run_on_a_locked_run_folder_stops_naming_the_pid(tiny_hf, shapes_manifest, tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "busy").mkdir(parents=True)
    with lock_run_folder(runs / "busy"):
        assert (runs / "busy" / ".run.lock").read_text() == f"{os.getpid()}\n"
        for main, extra in ((finetune.main, ["--epochs", "1"]), (curve.main, ["--sizes", "8"])):
            assert main(_args(tiny_hf, shapes_manifest, runs, "--name", "busy", *extra)) == 2
            err = capsys.readouterr().err
            assert f"another run (pid {os.getpid()})" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in (runs / "busy").iterdir()) == [".run.lock"]


def test_unnamed_runs_started_in_the_same_second_get_their_own_folders(tiny_hf, shapes_manifest, tmp_path,
                                                                       monkeypatch):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2030, 1, 2, 3, 4, 5)

    monkeypatch.setattr(folder, "datetime", Frozen)
    runs = tmp_path / "runs"
    for _ in range(2):
        assert finetune.main(_args(tiny_hf, shapes_manifest, runs, "--epochs", "0")) == 0
    made = sorted(p for p in runs.iterdir() if not p.name.startswith("."))  # .cache: the base model's retention
    assert [p.name for p in made] == ["20300102-030405", "20300102-030405-2"]
    assert all((run / "config.json").is_file() for run in made)


def test_claiming_an_unnamed_folder_is_atomic_and_a_failed_start_leaves_no_folder(tmp_path):
    claims = [claim_run_folder(tmp_path / "runs", "t", unique=True) for _ in range(3)]
    assert [name for name, _ in claims] == ["t", "t-2", "t-3"]
    assert claim_run_folder(tmp_path / "runs", "t", unique=False) == ("t", [])  # a named run reuses its folder
    with pytest.raises(InputError):
        with lock_run_folder(tmp_path / "runs" / "t-3", claims[2][1]):
            raise InputError("bad records")
    assert not (tmp_path / "runs" / "t-3").exists() and (tmp_path / "runs" / "t-2").is_dir()
    name, created = claim_run_folder(tmp_path / "fresh" / "runs", "n", unique=False)
    with pytest.raises(InputError):
        with lock_run_folder(tmp_path / "fresh" / "runs" / "n", created):
            raise InputError("no such model folder")
    assert not (tmp_path / "fresh" / "runs").exists()  # nothing left behind, not even --runs-dir


@pytest.mark.parametrize("lock", ["fetch", "run"])
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path, lock, link):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    name = ".fetch.lock" if lock == "fetch" else ".run.lock"
    (os.symlink if link == "symlink" else os.link)(target, out / name)
    holder = lock_output_folder(out) if lock == "fetch" else lock_run_folder(out)
    with pytest.raises(InputError, match="not a plain file"):
        with holder:
            pass
    assert target.read_text() == "keep me\n"


def test_a_special_file_as_lock_is_refused(tmp_path):
    os.mkfifo(tmp_path / ".run.lock")
    with pytest.raises(InputError, match="not a plain file"):
        with lock_run_folder(tmp_path):
            pass
