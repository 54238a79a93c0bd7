"""Data-parallel fine-tuning over `mx.distributed` (launched with `mlx.launch`: ring/TCP, MPI ...).

N processes ("ranks") with the same model and seed train like ONE process with the same
`--batch-size` (a GLOBAL batch G): the seeded shuffle is the same on every rank, and rank r
loads and embeds only its contiguous slice of every global batch (G/N images: G must be a
multiple of N; an epoch's short last batch b is split ceil(b/N) per rank and padded, the
padding masked out of the loss).

The contrastive loss and its gradient
-------------------------------------
Single process, global batch of G pairs with normalised features I, T (G x D), scale s:

    L(I, T, s) = 1/2 [ 1/G sum_i CE_row_i(s I T^T) + 1/G sum_j CE_row_j(s T I^T) ]

with soft targets spreading each row's mass over the entries showing the same image (loss.py).
Every rank all-gathers I, T (and the image groups and the padding mask) and computes this
SAME full G x G loss (`loss.contrastive_loss`, the function one process uses), but through

    gathered = concat(stop_gradient(all_gather(x))[:r B], x, stop_gradient(...)[(r+1) B:])

so only its own rows carry gradient. For a parameter theta of the towers, rank r's
gradient is therefore  sum_{k in rank r} dL/dI_k dI_k/dtheta (+ the same for T_k): the exact
gradient of L restricted to the features rank r computed. Every feature belongs to exactly
one rank, so   sum_r grad_r(theta) = dL/dtheta,  the single-process gradient of batch G.
The gradients are therefore all_sum-ed (inside the compiled step), not averaged. The one
exception is the temperature s: it enters the loss directly, so each rank already holds
the full dL/ds and the sum is divided by N. The loss value is the same on every rank and
equals the single-process loss. (MLX 0.32's all_gather vjp slices the local cotangent,
which is the same thing; the explicit stop_gradient keeps this right whatever it does.)

Every rank computes the G x G logits (G^2 D flops: negligible next to the towers).

Failure handling: the ring backend raises "[ring] connection to a peer was lost" within
seconds when a peer's socket closes (a killed process); that error becomes a one-line
`PeerLostError`. A watchdog thread covers peers that vanish without closing their socket
(power loss, cable): a collective wait longer than MLX_CLIP_DIST_TIMEOUT seconds (default
900) ends the process with a message. Only rank 0 writes (checkpoints are atomic, see
checkpoint.py), so the last checkpoint on disk stays intact whichever rank dies.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..errors import InputError
from ..models.text_length import trim_padding
from .checkpoint import Checkpoint
from .collectives import distributed_clip_loss, sum_tree
from .step import Trainer

TIMEOUT_ENV = "MLX_CLIP_DIST_TIMEOUT"


class PeerLostError(InputError):
    """Another rank stopped (killed, crashed, unplugged): this one stops too, with one line."""


# --- watchdog --------------------------------------------------------------------------------------

class Watchdog:
    """Ends the process when one collective wait outlasts `timeout` seconds (a peer that vanished
    without closing its socket would otherwise block it forever)."""

    def __init__(self, rank: int, timeout: float, exit: Callable[[int], None] = os._exit):
        self.rank, self.timeout, self.exit = rank, timeout, exit
        self._waiting: tuple[str, float] | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True, name="mlx-clip-watchdog")
        self._thread.start()

    @contextlib.contextmanager
    def waiting(self, what: str):
        self._waiting = (what, time.monotonic())
        try:
            yield
        except RuntimeError as err:  # the ring backend: "[ring] connection to a peer was lost"
            raise PeerLostError(f"rank {self.rank}: lost the other ranks during {what} ({err}); the run stops "
                                "here: its last checkpoint is intact, restart all ranks with --resume") from None
        finally:
            self._waiting = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            waiting = self._waiting
            if waiting and time.monotonic() - waiting[1] > self.timeout:
                print(f"error: rank {self.rank}: no answer from the other ranks for {self.timeout:g}s during "
                      f"{waiting[0]} (one stopped?); the run stops here: its last checkpoint is intact, restart "
                      f"all ranks with --resume (timeout: {TIMEOUT_ENV})", file=sys.stderr, flush=True)
                self.exit(3)
                return


# --- context ---------------------------------------------------------------------------------------

@dataclass
class Dist:
    """This process's place in the run. size 1 (not launched): every hook is the identity."""

    group: object | None = None
    rank: int = 0
    size: int = 1
    watchdog: Watchdog | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def waiting(self, what: str):
        return self.watchdog.waiting(what) if self.watchdog else contextlib.nullcontext()

    def describe(self, batch_size: int) -> str:
        return (f"distributed: {self.size} processes; --batch-size {batch_size} is the global batch: "
                f"{batch_size // self.size} images per process per step (the same training as one process "
                f"with --batch-size {batch_size})")

    def trainer(self, model, optimizer, precision: str = "float32", eos_token_id: int | None = None) -> Trainer:
        if not self.active:
            return Trainer(model, optimizer, precision, eos_token_id)
        return DistributedTrainer(model, optimizer, precision, eos_token_id, dist=self)

    def stream(self, stream):
        return ShardedStream(stream, self) if self.active else stream

    def check_batch_size(self, batch_size: int) -> None:
        """The global batch must split evenly (only a short last batch of an epoch is padded)."""
        if self.active and batch_size % self.size:
            lower, upper = batch_size // self.size * self.size, (batch_size // self.size + 1) * self.size
            options = f"{lower} or {upper}" if lower else f"{upper}"
            raise InputError(f"--batch-size {batch_size} is the global batch and must be a multiple of the "
                             f"{self.size} processes: use {options}")

    def broadcast_json(self, obj) -> object:
        """Rank 0's JSON-able object on every rank."""
        import json

        if not self.active:
            return obj
        data = np.frombuffer(json.dumps(obj).encode("utf-8"), np.uint8) if self.is_main else np.zeros(0, np.uint8)
        with self.waiting("sharing the run's settings"):
            length = int(mx.distributed.all_sum(mx.array([len(data)]), group=self.group).item())
            buffer = np.zeros(length, np.int32)
            buffer[:len(data)] = data
            summed = np.array(mx.distributed.all_sum(mx.array(buffer), group=self.group))
        return json.loads(summed.astype(np.uint8).tobytes().decode("utf-8"))

    def gather_json(self, obj) -> list:
        """Every rank's JSON-able object, in rank order, on every rank. No watchdog: the others may
        wait here while one rank fetches for hours; a rank that dies closes its sockets instead."""
        import json

        if not self.active:
            return [obj]
        data = np.frombuffer(json.dumps(obj).encode("utf-8"), np.uint8)
        lengths = np.zeros(self.size, np.int32)
        lengths[self.rank] = len(data)
        lengths = np.array(mx.distributed.all_sum(mx.array(lengths), group=self.group)).astype(int)
        rows = np.zeros((self.size, int(lengths.max())), np.int32)
        rows[self.rank, :len(data)] = data
        rows = np.array(mx.distributed.all_sum(mx.array(rows), group=self.group)).astype(np.uint8)
        return [json.loads(rows[r, :lengths[r]].tobytes().decode("utf-8")) for r in range(self.size)]

    def broadcast_arrays(self, flat: dict[str, mx.array] | None) -> dict[str, mx.array]:
        """Rank 0's flat dict of arrays on every rank (the others pass None); exact (x + 0 = x)."""
        if not self.active:
            return flat
        spec = self.broadcast_json([[k, list(v.shape), str(v.dtype).split(".")[-1]] for k, v in flat.items()]
                                   if self.is_main else None)
        arrays = []
        for key, shape, dtype in spec:
            arrays.append(flat[key] if self.is_main else mx.zeros(shape, getattr(mx, dtype)))
        with self.waiting("sharing the checkpoint"):
            summed = [mx.distributed.all_sum(a, group=self.group) for a in arrays]
            mx.eval(summed)
        return {key: value for (key, _, _), value in zip(spec, summed)}

    def resume(self, config: dict | None, checkpoint: Checkpoint | None) -> tuple[dict, Checkpoint]:
        """Rank 0's saved config (as a dict) and checkpoint on every rank: rank 0 passes what it
        read, the others None, so only rank 0 needs the runs folder."""
        if not self.active:
            return config, checkpoint
        shared = self.broadcast_json({"config": config, "path": str(checkpoint.folder), "info": checkpoint.info}
                                     if self.is_main else None)
        weights = self.broadcast_arrays(checkpoint.weights if self.is_main else None)
        optimizer = self.broadcast_arrays(dict(tree_flatten(checkpoint.optimizer_state)) if self.is_main else None)
        if not self.is_main:
            checkpoint = Checkpoint(Path(shared["path"]), weights, tree_unflatten(list(optimizer.items())), [],
                                    shared["info"])
        return shared["config"], checkpoint

    def sharded_rows(self, embed: Callable[[list], np.ndarray], items: list) -> np.ndarray:
        """embed(items) computed as each rank embedding its contiguous slice, gathered on every rank."""
        start, stop, rows = shard_bounds(len(items), self.rank, self.size)
        local = embed(items[start:stop])
        if len(local) < rows:
            local = np.concatenate([local, np.zeros((rows - len(local),) + local.shape[1:], local.dtype)])
        return self.gather_rows(local, len(items))

    def gather_rows(self, local: np.ndarray, total: int) -> np.ndarray:
        """Every rank's (per, D) block (the last ones padded) -> the first `total` rows, in rank order."""
        with self.waiting("evaluation"):
            out = np.array(mx.distributed.all_gather(mx.array(local), group=self.group))
        return out[:total]


def is_main_process() -> bool:
    """True in a single process and on rank 0 of a distributed run (the one that writes)."""
    return mx.distributed.init().rank() == 0


def init() -> Dist:
    """`mx.distributed.init()`: size 1 unless started by mlx.launch (or MLX_RANK + MLX_HOSTFILE)."""
    group = mx.distributed.init()
    if group.size() == 1:
        return Dist()
    timeout = float(os.environ.get(TIMEOUT_ENV, "900") or 900)
    return Dist(group, group.rank(), group.size(), Watchdog(group.rank(), timeout))


# --- training --------------------------------------------------------------------------------------

def shard_bounds(global_size: int, rank: int, size: int) -> tuple[int, int, int]:
    """(start, stop, rows): rank's contiguous slice of a global batch, padded to `rows` rows."""
    rows = math.ceil(global_size / size)
    start = min(global_size, rank * rows)
    return start, min(global_size, start + rows), rows


class ShardedStream:
    """This rank's slice of every global batch of a TrainStream (same shuffle on every rank).

    Batches carry `valid` (rows, bool: False on padding) and `global_size`; `record_id` and
    `caption` list this rank's real samples only.
    """

    def __init__(self, stream, dist: Dist):
        self.stream, self.dist = stream, dist
        self.items = stream.items
        self.batch_size = stream.batch_size
        dist.check_batch_size(self.batch_size)

    def __len__(self) -> int:
        return len(self.stream)

    def epoch(self, epoch: int) -> Iterator[dict]:
        # batch % size == 0 (Dist.check_batch_size): every full batch gives each rank exactly
        # `per` samples, so batching the rank's list by `per` lines up with the global batches
        samples = self.stream.samples(epoch)
        size, rank, batch = self.dist.size, self.dist.rank, self.batch_size
        plan, local = [], []
        for begin in range(0, len(samples), batch):
            chunk = samples[begin:begin + batch]
            start, stop, rows = shard_bounds(len(chunk), rank, size)
            plan.append((len(chunk), stop - start, rows))
            local.extend(chunk[start:stop])
        per = math.ceil(batch / size)
        loaded = self.stream.batches(local, per)
        for global_size, count, rows in plan:
            out = next(loaded) if count else None
            yield self._pad(out, global_size, count, rows)

    def _pad(self, batch: dict | None, global_size: int, count: int, rows: int) -> dict:
        s = self.stream
        if batch is None:  # nothing of this (short) global batch is ours
            batch = s.empty_batch()
        pad = rows - count
        valid = np.arange(rows) < count
        if pad:
            eos = getattr(s.tokenize, "eos_token_id", None)
            filler = np.zeros((pad, batch["input_ids"].shape[1]), batch["input_ids"].dtype)
            if eos is not None:
                filler[:, 0] = eos
            batch = dict(batch, pixels=np.concatenate([batch["pixels"], np.zeros((pad,) + batch["pixels"].shape[1:],
                                                                                  np.float32)]),
                         input_ids=np.concatenate([batch["input_ids"], filler]),
                         image_group=np.concatenate([batch["image_group"],
                                                     np.full((pad,) + batch["image_group"].shape[1:], -1, np.int64)]))
        return dict(batch, valid=valid, global_size=global_size)


class DistributedTrainer(Trainer):
    """Trainer whose step computes the global batch's loss from this rank's shard and sums the
    gradients over ranks inside the compiled step (see the module doc for why a sum)."""

    def __init__(self, model, optimizer, precision="float32", eos_token_id=None, *, dist: Dist):
        self.dist = dist
        super().__init__(model, optimizer, precision, eos_token_id)

    def loss_fn(self, model, input_ids, pixel_values, groups, valid):
        return distributed_clip_loss(model, input_ids, pixel_values, groups, valid, self.dist.group)

    def reduce_grads(self, grads):
        summed = sum_tree(grads, self.dist.group)
        for name in self.scalars:  # every rank holds the full dL/ds (and SigLIP's dL/db)
            if name in summed:
                summed[name] = summed[name] / self.dist.size
        return summed

    def step_inputs(self, input_ids, pixel_values, groups=None, valid=None):
        ids = np.asarray(input_ids)
        if valid is None:
            valid = np.ones(len(ids), bool)
        if groups is None:  # every entry its own image (numbered apart across ranks)
            groups = np.arange(len(ids)) + self.dist.rank * len(ids)
        # trim to the global batch's padding length (all ranks must agree on the shape)
        needed = trim_padding(ids, self.eos_token_id).shape[1] if len(ids) else 0
        length = int(mx.distributed.all_max(mx.array([needed]), group=self.dist.group).item())
        return (mx.array(ids[:, :length]), mx.array(pixel_values), mx.array(np.asarray(groups, np.int32)),
                mx.array(np.asarray(valid)))

    def submit(self, input_ids, pixel_values, **extra):
        with self.dist.waiting("a training step"):  # step_inputs agrees on the padding with the others
            return super().submit(input_ids, pixel_values, **extra)

    def settle(self, pending) -> float:
        with self.dist.waiting("a training step"):
            return super().settle(pending)
