"""--dry-run: what the run would do and its measured cost (a few real steps on real batches),
without training or writing a run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np

from ..config import FinetuneConfig
from ..models.clip import CLIP
from ..train.optim import make_optimizer
from ..train.step import Trainer, count_parameters
from .console import describe, duration, gib, peak_memory
from .prepare import prepare


def dry_run(config: FinetuneConfig, say: Callable[[str], None] = print, measure_steps: int = 3,
            model: CLIP | None = None) -> dict[str, float]:
    """Print what the run would do and its measured cost (a few real steps on real batches); train nothing."""
    prepared = prepare(config, say, model)
    model = prepared.model
    prepared.ready_to_train()
    say(describe(prepared, count_parameters(model.trainable_parameters())))
    spe = prepared.steps_per_epoch
    trainer = Trainer(model, make_optimizer(config.optim, config.total_steps(spe)), config.precision, model.tokenizer.eos_token_id)
    stream = prepared.train_stream()
    batches, load_times = [], []
    started = time.perf_counter()
    for batch in stream.epoch(1):
        batches.append(batch)
        load_times.append(time.perf_counter() - started)
        if len(batches) >= min(measure_steps, spe):
            break
    stream_images_s = sum(len(b["record_id"]) for b in batches) / max(1e-9, load_times[-1])
    step_times = []
    for i in range(measure_steps):
        batch = batches[i % len(batches)]
        started = time.perf_counter()
        trainer.step(batch["input_ids"], batch["pixels"])
        step_times.append(time.perf_counter() - started)
    step_s = float(np.median(step_times[1:])) if len(step_times) > 1 else step_times[0]
    started = time.perf_counter()
    mx.eval(model.embed_pixels(batches[0]["pixels"]))
    eval_per_image = (time.perf_counter() - started) / len(batches[0]["record_id"])
    memory = peak_memory()
    train_epoch_s = max(step_s, config.batch_size / stream_images_s) * spe
    eval_s = eval_per_image * len(prepared.val_index)
    say(f"measured: {measure_steps} steps of {config.batch_size} images: first {step_times[0]:.2f}s (compiles), "
        f"then {step_s:.2f}s/step = {config.batch_size / step_s:.1f} images/s; "
        f"data stream alone {stream_images_s:.1f} images/s")
    say(f"estimated time per epoch: {duration(train_epoch_s + eval_s)} (train {duration(train_epoch_s)}, "
        f"eval {duration(eval_s)}); all {config.epochs} epochs + evaluation before: "
        f"{duration(config.epochs * (train_epoch_s + eval_s) + eval_s)}")
    peak = f"estimated peak memory: {gib(memory['max_rss_bytes'])} process RSS"
    if "mlx_peak_bytes" in memory:
        peak += f" ({gib(memory['mlx_peak_bytes'])} MLX arrays)"
    say(peak)
    fetched = "" if config.manifest or prepared.manifest == Path(config.data) else \
        f" (the sample's images were fetched into {prepared.manifest.parent}, ready for the real run)"
    say(f"dry run: nothing trained, no run folder written{fetched}")
    return {"step_seconds": step_s, "stream_images_per_s": stream_images_s, "epoch_seconds": train_epoch_s + eval_s,
            **memory}
