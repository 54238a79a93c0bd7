"""One training epoch over a stream (`train_epoch`), and the float32 weights to evaluate and save
(`Float32View`): the mechanics that a run (run/loop.py) and a learning curve share."""

from __future__ import annotations

import time
from typing import Callable

import mlx.core as mx
from mlx.utils import tree_flatten

from ..data.stream import TrainStream
from ..models.clip import CLIP
from ..models.lora import merged_weights
from ..progress import Progress
from .nan_guard import NonFiniteError
from .step import Trainer, set_weights


class Float32View:
    """The float32 model to evaluate and save: the training model itself in float32 (with LoRA,
    evaluated through its adapters; the export merges them); in bfloat16 a second, plain model of
    the same family holding the master weights (adapters merged), so the training model never
    flips dtype under its compiled functions."""

    def __init__(self, model: CLIP, trainer: Trainer):
        self.trainer = trainer
        self.model = model
        if trainer.precision != "float32":
            self.model = type(model)(model.config, model.tokenizer if model.has_tokenizer else None,
                                     model.image_processor)
            self.refresh()
            self.model.eval()

    def refresh(self) -> CLIP:
        if self.trainer.precision != "float32":
            flat = dict(tree_flatten(self.trainer.fp32_parameters()))
            set_weights(self.model, merged_weights(self.trainer.model, flat))  # LoRA: adapters folded in
            mx.eval(self.model.parameters())
        return self.model


def train_epoch(trainer: Trainer, stream: TrainStream, epoch: int, epochs: int,
                progress: bool, on_step: Callable[[], None] | None = None) -> tuple[list[float], list[int]]:
    """One pass over the stream; each step's loss and batch size. `on_step` runs after each step.

    Each step is dispatched before the previous one's loss is read (`Trainer.submit` / `settle`):
    the next batch is taken from the stream and converted while the step runs, and no step waits
    on the host. A non-finite step is caught one step late; it and every later one were never
    applied (step.py), and the epoch stops there, saving nothing."""
    losses, sizes = [], []
    batches = stream.epoch(epoch)  # the epoch's plan; images are read as the steps take them
    bar = Progress(len(stream.items), f"epoch {epoch}/{epochs}", enabled=progress)  # plain lines in a log
    started, seen = time.perf_counter(), 0

    def settle(number: int, pending, size: int) -> None:
        nonlocal seen
        try:
            losses.append(trainer.settle(pending))
        except NonFiniteError as err:  # nothing from this step on was applied: stop before anything is saved
            bar.close()
            raise NonFiniteError(f"training diverged at epoch {epoch}, step {(epoch - 1) * len(stream) + number} "
                                 f"({number} of the epoch): {err}; nothing of this epoch was saved, the last "
                                 "checkpoint and model/ keep the last finite epoch") from None
        sizes.append(size)
        seen += size
        bar.update(size, f"loss {losses[-1]:.4f}, {seen / (time.perf_counter() - started):.1f} images/s")
        if on_step is not None:
            on_step()

    previous = None  # (number, pending step, batch size)
    for number, batch in enumerate(batches, 1):
        extra = {"valid": batch["valid"]} if "valid" in batch else {}  # a distributed shard
        pending = trainer.submit(batch["input_ids"], batch["pixels"], groups=batch["image_group"], **extra)
        if previous is not None:
            settle(*previous)
        previous = number, pending, batch.get("global_size", len(batch["record_id"]))
    if previous is not None:
        settle(*previous)
    bar.close()
    return losses, sizes
