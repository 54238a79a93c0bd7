"""Per-epoch checkpoints written atomically: weights, optimizer state, step, RNG, history.

A checkpoint is a folder `checkpoints/epoch-NNNN/` written under a temporary name, fsynced
and renamed into place (os.replace); `checkpoints/latest` names the newest one and is replaced
the same way, so a run killed at any moment leaves the previous checkpoint intact, and the
temporary folder it leaves is removed when the run starts again (`remove_partial_writes`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from ..errors import InputError
from ..io import PART_SUFFIX, atomic_file, fsync_folder, read_small_text, write_json, write_safetensors

LATEST = "latest"
TMP_PREFIX = ".tmp-"  # checkpoints/.tmp-epoch-NNNN-PID: a checkpoint being written


@dataclass
class Checkpoint:
    folder: Path
    weights: dict[str, mx.array]  # flat names
    optimizer_state: Any  # nested tree
    random_state: list
    info: dict[str, Any]  # epoch, step, seed, history, best ...


def save_checkpoint(folder: Path, epoch: int, weights_tree, optimizer_state, info: dict[str, Any],
                    keep: int = 2, midway: Callable[[], None] | None = None) -> Path:
    """Write checkpoints/epoch-NNNN atomically, point `latest` at it, keep the newest `keep`.

    A failure (disk full, read-only folder, Ctrl-C) removes the temporary folder and leaves the
    previous checkpoint and `latest` as they were. `midway` runs between the files (tests kill
    the process there).
    """
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"epoch-{epoch:04d}"
    tmp = folder / f"{TMP_PREFIX}epoch-{epoch:04d}-{os.getpid()}"
    try:
        tmp.mkdir()
        write_safetensors(tmp / "weights.safetensors", dict(tree_flatten(weights_tree)))
        if midway is not None:
            midway()
        write_safetensors(tmp / "optimizer.safetensors", dict(tree_flatten(optimizer_state)))
        write_safetensors(tmp / "random.safetensors", {f"{i}": a for i, a in enumerate(mx.random.state)})
        write_json(tmp / "state.json", dict(info, epoch=epoch))
        fsync_folder(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):  # name the checkpoint, not its temporary folder or file
            raise OSError(err.errno, err.strerror, str(final)) from err
        raise
    write_pointer(folder, final.name)
    for old in sorted(folder.glob("epoch-*"))[:-keep]:  # the newest `keep` stay
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_pointer(folder: Path, name: str) -> None:
    """`latest` := name, via a temporary file fsynced and renamed, then the folder fsynced: after a
    crash at any moment `latest` names a complete checkpoint, the old one or the new one."""
    with atomic_file(folder / LATEST, "w", durable_name=True) as handle:
        handle.write(name + "\n")


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete what a crash in the middle of a write left behind (temporary checkpoint folders,
    `.part` files of the model, export, json files and `latest`; `latest.tmp` and
    `*.part.safetensors` are the names runs made before io.py used); returns what was removed."""
    stale = [*run_dir.glob(f"checkpoints/{TMP_PREFIX}*"), *run_dir.glob(f"checkpoints/{LATEST}.tmp")]
    for pattern in (f"*{PART_SUFFIX}", f"*{PART_SUFFIX}.safetensors"):
        stale += [*run_dir.glob(pattern), *run_dir.glob(f"*/{pattern}")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return stale


def resolve_checkpoint(spec: str | Path, checkpoints: Path) -> Path:
    """`latest`, a checkpoint folder, or a run folder -> the checkpoint folder."""
    spec = str(spec)
    if spec != LATEST:
        path = Path(spec)
        if (path / "state.json").is_file():
            return path
        if (path / "checkpoints" / LATEST).is_file():
            checkpoints = path / "checkpoints"
        elif path.name.startswith("epoch-") and path.parent.name == "checkpoints":
            return path  # a damaged checkpoint: load_checkpoint names the older one
        else:
            raise InputError(f"{path}: not a checkpoint or run folder (no state.json or checkpoints/latest)")
    pointer = checkpoints / LATEST
    if not pointer.is_file():
        raise InputError(f"{checkpoints}: no checkpoint to resume from")
    return checkpoints / read_small_text(pointer).strip()


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint; a missing, truncated or corrupt one is one line naming the older one kept."""
    try:
        info = json.loads(read_small_text(path / "state.json"))
        weights = mx.load(str(path / "weights.safetensors"))
        optimizer_state = tree_unflatten(list(mx.load(str(path / "optimizer.safetensors")).items()))
        random = mx.load(str(path / "random.safetensors"))
        random_state = [random[str(i)] for i in range(len(random))]
        mx.eval(weights, optimizer_state, random_state)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: damaged checkpoint ({reason}); {_older_hint(path)}") from None
    return Checkpoint(path, weights, optimizer_state, random_state, info)


def _older_hint(path: Path) -> str:
    older = [p for p in sorted(path.parent.glob("epoch-*")) if p.name < path.name and (p / "state.json").is_file()]
    if not older:
        return "no older checkpoint is kept; start the run again without --resume"
    return f"the older checkpoint {older[-1]} is kept: --resume {older[-1]}"


def restore_random_state(state: list) -> bool:
    """Put a saved MLX random key back where this MLX allows it (0.32's state is read-only).

    Runs do not depend on it: `finetune.run` reseeds MLX at every epoch from (seed, epoch),
    and the stream's draws come from NumPy generators seeded the same way.
    """
    try:
        for i, value in enumerate(state):
            mx.random.state[i] = value
        return True
    except TypeError:
        return False
