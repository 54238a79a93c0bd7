"""The training run: `run()` opens (or resumes) a run folder, evaluates the starting model,
trains epoch by epoch with a checkpoint after each, and hands the best model to `finish`.

Under mlx.launch (several processes) it trains data-parallel (mlx_clip.train.distributed):
--batch-size is the global batch; only rank 0 prints and writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np
from mlx.utils import tree_unflatten

from ..settings import FinetuneConfig
from ..data.stream import TrainStream
from ..errors import InputError
from ..io import write_json
from ..models.clip import CLIP
from ..outputs.export import save_run_model
from ..outputs.run_paths import RunPaths
from ..train import distributed
from ..train.checkpoint import Checkpoint, remove_partial_writes, restore_random_state, save_checkpoint
from ..train.evaluate import evaluate
from ..train.optim import make_optimizer
from ..train.epoch import Float32View, train_epoch
from ..train.nan_guard import check_finite_weights
from ..train.step import Trainer, count_parameters
from ..train.metric_names import MEAN_R1
from .console import epoch_line, start_lines, stuck_warning
from .finish import finish
from .folder import check_resumed_split, open_run
from .prepare import Prepared, prepare


@dataclass
class Hooks:
    """Seams for tests that stop a run at an exact point (tests/run_with_kill.py): `on_step` after
    every training step of this process, `on_checkpoint(epoch)` between the files of epoch's
    checkpoint, `on_epoch(epoch)` once epoch's checkpoint is written."""

    on_step: Callable[[], None] | None = None
    on_checkpoint: Callable[[int], None] | None = None
    on_epoch: Callable[[int], None] | None = None


@dataclass
class Training:
    """What the epochs change: the trainer (weights and optimizer) and the run's record so far."""

    prepared: Prepared
    paths: RunPaths
    dist: distributed.Dist
    trainer: Trainer
    stream: TrainStream
    view: Float32View
    history: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "score": -math.inf})
    start_epoch: int = 1


def run(config: FinetuneConfig, resume: str | None = None, progress: bool = True,
        say: Callable[[str], None] = print, model: CLIP | None = None, hooks: Hooks | None = None) -> Path:
    """Train and write runs/NAME (config.json, metrics.json, plots, model/, checkpoints/);
    returns the run folder."""
    hooks = hooks or Hooks()
    dist = distributed.init()
    if not dist.is_main:
        say, progress = (lambda *_: None), False
    config, checkpoint, folder_lock = open_run(config, resume, dist, say)
    with folder_lock:
        return _run_in_folder(config, resume, checkpoint, dist, say, progress, model, hooks)


def _run_in_folder(config: FinetuneConfig, resume: str | None, checkpoint: Checkpoint | None,
                   dist: distributed.Dist, say: Callable[[str], None], progress: bool, model: CLIP | None,
                   hooks: Hooks) -> Path:
    """run()'s steps once the run folder is chosen (and, on rank 0, locked)."""
    prepared = prepare(config, say, model, dist)
    config = prepared.config  # as the data step resolved it
    paths = RunPaths.of(config.runs_dir, config.name)
    if not resume and paths.latest_checkpoint.is_file():
        raise InputError(f"{paths.root} already has a run; pass --resume to continue it or another --name")
    training = start_training(prepared, paths, dist, checkpoint, resume)
    for line in start_lines(prepared, count_parameters(prepared.model.trainable_parameters()),
                            dist.describe(config.batch_size) if dist.active else None, training.history):
        say(line)
    if checkpoint is None:
        evaluate_before(training, say)
    if dist.is_main and training.start_epoch > config.epochs and training.best["epoch"] is None:
        save_run_model(training.view.refresh(), paths.model)  # no training (--epochs 0): the starting model
    for epoch in range(training.start_epoch, config.epochs + 1):
        train_and_save(training, epoch, progress, hooks, say)
        if hooks.on_epoch is not None:
            hooks.on_epoch(epoch)
    if dist.is_main:  # rank 0 writes the model, metrics and plots
        finish(paths, prepared, training.history, training.best, training.step_losses, say)
    return paths.root


def write_start(paths: RunPaths, prepared: Prepared) -> None:
    """config.json (the settings and what they resolved to) and split.json, before training."""
    config, model = prepared.config, prepared.model
    total_steps = config.total_steps(prepared.steps_per_epoch)
    paths.root.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(paths.root)  # a crash mid-write (or a full disk) left them
    write_json(paths.config, {**config.to_dict(), "resolved": {
        "manifest": str(prepared.manifest), "records": len(prepared.items),
        "train_records": len(prepared.train_index), "val_records": len(prepared.val_index),
        "test_records": len(prepared.test_index), "test_fingerprint": prepared.split_ids["fingerprint"],
        "split": prepared.split_line,
        "groups": prepared.groups.line() if prepared.groups else None, "dropped_empty_captions": prepared.dropped_empty,
        "steps_per_epoch": prepared.steps_per_epoch, "total_steps": total_steps,
        "warmup_steps": config.optim.warmup_steps(total_steps), "betas": list(config.optim.betas),
        "eps": config.optim.eps,
        "image_size": model.config.vision.image_size, "skipped": prepared.skipped_line}})
    write_json(paths.split, prepared.split_ids)
    if prepared.caption_check is not None:
        write_json(paths.captions, prepared.caption_check.to_dict())


def start_training(prepared: Prepared, paths: RunPaths, dist: distributed.Dist, checkpoint: Checkpoint | None,
                   resume: str | None = None) -> Training:
    """The run folder's start files (rank 0; a resumed run's split checked first), then the towers
    locked and the trainer and stream built; a resumed run restores its checkpoint."""
    config, model = prepared.config, prepared.model
    if resume and dist.is_main:  # before write_start rewrites split.json
        check_resumed_split(paths, prepared.split_ids)
    if dist.is_main:
        write_start(paths, prepared)
    trainer = dist.trainer(model, make_optimizer(config.optim, config.total_steps(prepared.steps_per_epoch)),
                           config.precision,
                           model.tokenizer.eos_token_id)
    stream = dist.stream(prepared.train_stream(prepared.model))
    if checkpoint is None:
        return Training(prepared, paths, dist, trainer, stream, Float32View(model, trainer))
    trainer.load_fp32_parameters(tree_unflatten(list(checkpoint.weights.items())))
    trainer.load_optimizer_state(checkpoint.optimizer_state)
    restore_random_state(checkpoint.random_state)
    mx.eval(trainer.state)
    info = checkpoint.info
    return Training(prepared, paths, dist, trainer, stream, Float32View(model, trainer), info["history"],
                    info["step_losses"], info["best"], info["epoch"] + 1)


def evaluate_before(training: Training, say: Callable[[str], None]) -> None:
    """Epoch 0: the starting model on validation (per-item details kept for the report) and on
    the test set (kept for compare.py and the summary)."""
    prepared, paths, dist = training.prepared, training.paths, training.dist
    label_prompt = prepared.config.label_prompt
    started = time.perf_counter()
    row = {"epoch": 0, "train_loss": None,
           **evaluate(training.view.refresh(), training.prepared.val_set, label_prompt, dist=dist,
                      keep=paths.eval_before if dist.is_main else None)}
    row["eval_seconds"] = time.perf_counter() - started
    training.history.append(row)
    say(epoch_line(prepared, row))
    if row.get("zero_shot_note"):
        say(row["zero_shot_note"])
    if prepared.test_index and dist.is_main:
        write_json(paths.test_before_metrics,
                   evaluate(training.view.refresh(), prepared.test_set, label_prompt,
                            keep=paths.test_before))


def train_and_save(training: Training, epoch: int, progress: bool, hooks: Hooks, say: Callable[[str], None]) -> None:
    """One epoch: train, evaluate on validation, keep the model when it is the best so far, and
    write the epoch's checkpoint."""
    prepared, paths, dist, trainer = training.prepared, training.paths, training.dist, training.trainer
    config, spe = prepared.config, prepared.steps_per_epoch
    mx.random.seed(config.sample.seed * 100_003 + epoch)  # epoch-determined, so a resumed run matches
    started = time.perf_counter()
    losses, sizes = train_epoch(trainer, training.stream, epoch, config.epochs, progress, on_step=hooks.on_step)
    train_seconds = time.perf_counter() - started
    stuck = stuck_warning(epoch, losses, sizes, (epoch - 1) * spe,
                          config.optim.warmup_steps(config.total_steps(spe)), trainer.loss_kind)
    training.step_losses.extend(losses)
    eval_model = training.view.refresh()
    eval_started = time.perf_counter()
    row = {"epoch": epoch, "train_loss": float(np.average(losses, weights=sizes)),  # per image
           "lr": float(trainer.optimizer.optimizers[0].learning_rate),
           **evaluate(eval_model, training.prepared.val_set, config.label_prompt, dist=dist)}
    row.update(seconds=train_seconds, train_images_per_s=len(prepared.train_index) / train_seconds,
               eval_seconds=time.perf_counter() - eval_started)
    if stuck:
        row["warning"] = stuck
    training.history.append(row)
    say(epoch_line(prepared, row))
    if stuck:
        say(stuck)
    score = row.get(MEAN_R1, -row["train_loss"])
    if score > training.best["score"]:
        training.best = {"epoch": epoch, "score": score}
        if dist.is_main:
            check_finite_weights(eval_model.parameters(), f"{paths.model} (epoch {epoch})")
            save_run_model(eval_model, paths.model)
    if dist.is_main:  # atomic (temp folder + rename): a rank dying now leaves the previous one intact
        check_finite_weights(trainer.fp32_parameters(), f"checkpoint of epoch {epoch}")
        midway = (lambda: hooks.on_checkpoint(epoch)) if hooks.on_checkpoint is not None else None
        save_checkpoint(paths.checkpoints, epoch, trainer.fp32_parameters(), trainer.optimizer.state,
                        {"step": epoch * spe, "seed": config.sample.seed, "history": training.history,
                         "step_losses": training.step_losses, "best": training.best,
                         "stream": "numpy default_rng([seed, epoch])"},
                        midway=midway)
