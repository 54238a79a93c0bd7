"""Per-epoch checkpoints written atomically: weights, optimizer state, step, RNG, history.

A checkpoint is a folder `checkpoints/epoch-NNNN/` written under a temporary name and
renamed into place (os.replace); `checkpoints/latest` names the newest one and is replaced
the same way, so a run killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from ..errors import InputError

LATEST = "latest"


@dataclass
class Checkpoint:
    folder: Path
    weights: dict[str, mx.array]  # flat names
    optimizer_state: Any  # nested tree
    random_state: list
    info: dict[str, Any]  # epoch, step, seed, history, best ...


def save_checkpoint(folder: Path, epoch: int, weights_tree, optimizer_state, info: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoints/epoch-NNNN atomically, point `latest` at it, keep the newest `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"epoch-{epoch:04d}"
    tmp = folder / f".tmp-epoch-{epoch:04d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    mx.save_safetensors(str(tmp / "weights.safetensors"), dict(tree_flatten(weights_tree)))
    optimizer_flat = dict(tree_flatten(optimizer_state))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), optimizer_flat)
    mx.save_safetensors(str(tmp / "random.safetensors"),
                        {f"{i}": a for i, a in enumerate(mx.random.state)})
    (tmp / "state.json").write_text(json.dumps(dict(info, epoch=epoch), indent=2) + "\n", encoding="utf-8")
    for path in tmp.iterdir():  # on disk before the rename makes it visible
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = folder / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n", encoding="utf-8")
    os.replace(pointer, folder / LATEST)
    for old in sorted(folder.glob("epoch-*"))[:-keep]:  # the newest `keep` stay
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(spec: str | Path, checkpoints: Path) -> Path:
    """`latest`, a checkpoint folder, or a run folder -> the checkpoint folder."""
    spec = str(spec)
    if spec != LATEST:
        path = Path(spec)
        if (path / "state.json").is_file():
            return path
        if (path / "checkpoints" / LATEST).is_file():
            checkpoints = path / "checkpoints"
        else:
            raise InputError(f"{path}: not a checkpoint or run folder (no state.json or checkpoints/latest)")
    pointer = checkpoints / LATEST
    if not pointer.is_file():
        raise InputError(f"{checkpoints}: no checkpoint to resume from")
    return checkpoints / pointer.read_text(encoding="utf-8").strip()


def load_checkpoint(path: Path) -> Checkpoint:
    if not (path / "state.json").is_file():
        raise InputError(f"{path}: incomplete checkpoint (no state.json)")
    weights = mx.load(str(path / "weights.safetensors"))
    optimizer_state = tree_unflatten(list(mx.load(str(path / "optimizer.safetensors")).items()))
    random = mx.load(str(path / "random.safetensors"))
    random_state = [random[str(i)] for i in range(len(random))]
    info = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return Checkpoint(path, weights, optimizer_state, random_state, info)


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
