"""Stopping a run at any moment loses at most the epoch in progress, and `--resume` then ends
exactly like an uninterrupted run: SIGKILL mid-epoch, in the middle of a checkpoint write and
right after one (the newest checkpoint then truncated), and Ctrl-C (finetune.py and curve.py).
A full disk or a read-only run folder is one line and leaves nothing half-written; every file
follows the umask."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_clip import io
from mlx_clip.train import checkpoint as C

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "train_images_per_s", "eval_seconds")
UMASK = 0o007  # not the usual 022: files must come out 0660, folders 0770
STEPS_PER_EPOCH = 8  # 173 training records in batches of 24


def _env(env_extra=None):
    # Multi-threaded OpenBLAS (Linux) is not bitwise reproducible run to run (last-bit float
    # differences between two identical uninterrupted runs too); one BLAS thread is, and lets
    # these tests demand bitwise equality of the resume logic.
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))


def _as_from_a_terminal(umask=None):
    """The child's start as a terminal gives it: SIGINT at its default, so Python turns Ctrl-C into
    KeyboardInterrupt whatever the test process's own disposition (an ignored SIGINT is inherited;
    twice in one xdist worker the interrupted runs finished as if never signalled)."""

    def start() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if umask is not None:
            os.umask(umask)

    return start


def _finetune(args, env_extra=None, umask=None, script=("finetune.py",)):
    return subprocess.run([sys.executable, *script, *args], cwd=ROOT, env=_env(env_extra),
                          capture_output=True, text=True, timeout=240, preexec_fn=_as_from_a_terminal(umask))


def _killed_at(kill_at, args):
    """finetune.py's run, SIGKILLed at `kill_at` (step:N, checkpoint:N or epoch:N; tests/run_with_kill.py)."""
    return _finetune(args, script=("tests/run_with_kill.py", kill_at))


def _common(tiny_hf, shapes_manifest, runs):
    return ["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(runs),
            "--caption", "a {colour} {shape}", "--caption", "{shape}, {colour}", "--label-field", "label",
            "--batch-size", "24", "--epochs", "3", "--lr", "1e-3", "--rotate", "10", "--color-jitter", "0.2",
            "--vflip", "--no-progress", "--seed", "5"]


def _resume(runs, *extra):
    return _finetune(["--runs-dir", str(runs), "--name", "cut", "--resume", *extra, "--no-progress"])


def _history(run):
    metrics = json.loads((run / "metrics.json").read_text())
    return [{k: v for k, v in row.items() if k not in TIMING} for row in metrics["history"]], metrics


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-") or ".part" in p.name or p.name.endswith(".tmp")]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def assert_same_run(cut: Path, full: Path) -> None:
    """Same history, step losses, best epoch, final weights and optimizer state, bit for bit."""
    ours, ours_metrics = _history(cut)
    theirs, theirs_metrics = _history(full)
    assert ours == theirs
    assert ours_metrics["step_losses"] == theirs_metrics["step_losses"]
    assert len(ours_metrics["step_losses"]) == 3 * STEPS_PER_EPOCH
    assert ours_metrics["best_epoch"] == theirs_metrics["best_epoch"]
    for name in ("checkpoints/epoch-0003/weights.safetensors", "checkpoints/epoch-0003/optimizer.safetensors",
                 "model/model.safetensors"):
        a, b = mx.load(str(cut / name)), mx.load(str(full / name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.array(a[key]), np.array(b[key]), err_msg=f"{name}: {key}")
    assert not _leftovers(cut)


@pytest.fixture(scope="module")
def full_run(tiny_hf, shapes_manifest, tmp_path_factory) -> Path:
    """The uninterrupted run every stopped one must end like (written under umask 007)."""
    runs = tmp_path_factory.mktemp("full")
    done = _finetune(_common(tiny_hf, shapes_manifest, runs) + ["--name", "full"], umask=UMASK)
    assert done.returncode == 0, done.stderr
    return runs / "full"


def test_every_file_follows_the_umask(full_run):
    paths = [full_run, *full_run.rglob("*")]
    assert {"model", "checkpoints", "config.json", "metrics.json"} <= {p.name for p in paths}
    modes = {str(p.relative_to(full_run)): oct(p.stat().st_mode & 0o777) for p in paths}
    expected = {str(p.relative_to(full_run)): oct((0o777 if p.is_dir() else 0o666) & ~UMASK) for p in paths}
    assert modes == expected


@pytest.mark.parametrize("kill_at", ["step:11", "checkpoint:2"])
def test_killed_mid_epoch_or_mid_checkpoint_resumes_exactly(kill_at, full_run, tiny_hf, shapes_manifest, tmp_path):
    # step 11 is the 3rd of epoch 2; checkpoint:2 dies after epoch 2's weights file, before its optimizer file
    killed = _killed_at(kill_at, _common(tiny_hf, shapes_manifest, tmp_path) + ["--name", "cut"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = tmp_path / "cut" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "epoch-0001"
    assert not (checkpoints / "epoch-0002").exists() and not (tmp_path / "cut" / "metrics.json").exists()
    stale = list(checkpoints.glob(".tmp-epoch-0002-*"))
    if kill_at.startswith("checkpoint"):  # the write really was cut: half a checkpoint on disk
        assert len(stale) == 1 and [p.name for p in stale[0].iterdir()] == ["weights.safetensors"]
    else:
        assert not stale

    resumed = _resume(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "from epoch-0001" in resumed.stdout
    assert_same_run(tmp_path / "cut", full_run)


def test_truncated_checkpoint_names_the_older_one_which_resumes(full_run, tiny_hf, shapes_manifest, tmp_path):
    killed = _killed_at("epoch:2", _common(tiny_hf, shapes_manifest, tmp_path) + ["--name", "cut"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = tmp_path / "cut" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "epoch-0002"
    weights = checkpoints / "epoch-0002" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    refused = _resume(tmp_path)
    assert refused.returncode == 2
    line = _one_line(refused.stderr)
    older = checkpoints / "epoch-0001"
    assert line.startswith(f"error: {checkpoints / 'epoch-0002'}: damaged checkpoint"), line
    assert line.endswith(f"--resume {older}"), line

    resumed = _finetune(["--runs-dir", str(tmp_path), "--resume", str(older), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert "from epoch-0001" in resumed.stdout
    assert_same_run(tmp_path / "cut", full_run)

def _interrupt(command: list[str], marker, written: Path, wait: float) -> tuple[int, str]:
    """Run `command`, and once a stdout line satisfies `marker` and `written` exists (or `wait`
    seconds pass), send it Ctrl-C; its exit code and stderr."""
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal())
    try:
        for line in proc.stdout:
            if marker(line):
                break
        deadline = time.monotonic() + wait
        while not written.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, stderr



def test_ctrl_c_stops_with_one_line_and_resume_finishes(full_run, tiny_hf, shapes_manifest, tmp_path):
    # Ctrl-C at the first step of epoch 2 (tests/run_with_kill.py interrupt:N runs finetune.py's own main)
    steps_per_epoch = json.loads((full_run / "config.json").read_text())["resolved"]["steps_per_epoch"]
    done = _finetune([*_common(tiny_hf, shapes_manifest, tmp_path), "--name", "cut"],
                     script=("tests/run_with_kill.py", f"interrupt:{steps_per_epoch + 1}"))
    assert done.returncode == 130, done.stderr
    line = _one_line(done.stderr)
    latest = (tmp_path / "cut" / "checkpoints" / "latest").read_text().strip()
    assert latest == "epoch-0001"
    assert line == "interrupted after epoch 1; --resume continues"
    assert not _leftovers(tmp_path / "cut")

    resumed = _resume(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "cut", full_run)


def test_ctrl_c_in_curve_is_one_line_and_keeps_the_measured_sizes(tiny_hf, shapes_manifest, tmp_path):
    args = _common(tiny_hf, shapes_manifest, tmp_path)
    args[args.index("--epochs") + 1] = "1"
    # curve.json is written right after the line of the first size
    returncode, stderr = _interrupt(["curve.py", *args, "--name", "c", "--sizes", "48,96,173"],
                                    lambda line: "48 images" in line, tmp_path / "c" / "curve.json", wait=30)
    assert returncode == 130, stderr
    saved = json.loads((tmp_path / "c" / "curve.json").read_text())
    done = len(saved["sizes"])
    assert _one_line(stderr) == f"interrupted after {done} of 3 sizes; {tmp_path}/c/curve.json keeps them"
    assert saved["sizes"][0] == 48 and not _leftovers(tmp_path / "c")


def test_disk_full_in_a_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    weights, optimizer = {"w": mx.arange(6.0)}, {"m": mx.ones(6)}
    C.save_checkpoint(tmp_path, 1, weights, optimizer, {"history": []})
    real = C.write_safetensors

    def full_disk(path, arrays, metadata=None):
        if path.name == "optimizer.safetensors":  # the weights file is already written
            with open(path, "wb") as handle:
                handle.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, arrays, metadata)

    monkeypatch.setattr(C, "write_safetensors", full_disk)
    with pytest.raises(OSError) as err:
        C.save_checkpoint(tmp_path, 2, weights, optimizer, {"history": []})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "epoch-0002")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001", "latest"]
    assert (tmp_path / "latest").read_text() == "epoch-0001\n"
    assert C.load_checkpoint(tmp_path / "epoch-0001").info["epoch"] == 1


@pytest.mark.parametrize("write", ["json", "safetensors"])
def test_disk_full_in_an_atomic_write_leaves_no_part_file(write, tmp_path, monkeypatch):
    target = tmp_path / ("a.json" if write == "json" else "a.safetensors")
    target.write_text("old")

    def full_disk(handle):  # the bytes are in the temporary file; flushing them fails
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io, "flush_to_disk", full_disk)
    with pytest.raises(OSError) as err:
        if write == "json":
            io.write_json(target, {"a": 1})
        else:
            io.write_safetensors(target, {"a": mx.ones(3)}, {})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name] and target.read_text() == "old"


def test_stale_partial_writes_are_removed_at_start(tmp_path):
    run = tmp_path / "run"
    for path in ("checkpoints/.tmp-epoch-0002-123/weights.safetensors", "checkpoints/latest.tmp",
                 "model/mlx_model.safetensors.part.safetensors", "export/config.json.part", "metrics.json.part"):
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("x")
    (run / "model" / "config.json").write_text("{}")
    removed = C.remove_partial_writes(run)
    assert len(removed) == 5 and not _leftovers(run)
    assert (run / "model" / "config.json").is_file()


def _namespaced(script: str) -> subprocess.CompletedProcess:
    """`script` in its own mount namespace (real tmpfs and read-only mounts; root only)."""
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)


def _can_mount() -> bool:
    return shutil.which("unshare") is not None and os.geteuid() == 0 and \
        _namespaced("mount -t tmpfs tmpfs /mnt").returncode == 0


needs_mounts = pytest.mark.skipif(not _can_mount(), reason="needs root and unshare --mount")


@needs_mounts
def test_real_full_disk_is_one_line_nothing_half_written_and_resume_continues(tiny_hf, shapes_manifest, tmp_path):
    # 40 MB holds the model (10 MB) and epoch 1's checkpoint (20 MB), not epoch 2's
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    args = " ".join(f"'{a}'" for a in _common(tiny_hf, shapes_manifest, disk) + ["--name", "cut"])
    done = _namespaced(f"""mount -t tmpfs -o size=40m tmpfs {disk}
        {sys.executable} finetune.py {args} >{out}.1 2>&1; echo $? >{out}.rc
        find {disk} -name '.tmp-*' -o -name '*.part*' >{out}.left; cat {disk}/cut/checkpoints/latest >{out}.latest
        mount -o remount,size=200m {disk}
        {sys.executable} finetune.py --runs-dir {disk} --name cut --resume --no-progress""")
    first = Path(f"{out}.1").read_text()
    assert Path(f"{out}.rc").read_text().strip() == "2", first
    assert [x for x in first.splitlines() if x.startswith("error")] == [
        f"error: {disk}/cut/checkpoints/epoch-0002: No space left on device; free space, "
        "then --resume continues after epoch 1"], first
    assert "Traceback" not in first
    assert Path(f"{out}.left").read_text() == "" and Path(f"{out}.latest").read_text() == "epoch-0001\n"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "from epoch-0001" in done.stdout and "wrote" in done.stdout


@needs_mounts
def test_read_only_run_folder_is_one_line(full_run):
    before = {p: p.stat().st_mtime_ns for p in full_run.rglob("*")}
    done = _namespaced(f"mount --bind -o ro {full_run} {full_run} && exec {sys.executable} finetune.py "
                       f"--runs-dir {full_run.parent} --name full --resume --no-progress")
    assert done.returncode == 2
    assert _one_line(done.stderr) == f"error: {full_run}/.run.lock: Read-only file system"  # its first write
    assert {p: p.stat().st_mtime_ns for p in full_run.rglob("*")} == before
