"""--dry-run: what the run would do and its measured cost (a few real steps on real batches),
without training or writing a run folder."""

from __future__ import annotations

import math
import os
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
    config, model = prepared.config, prepared.model
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
    mx.synchronize()
    mx.reset_peak_memory()  # from here: the weights, the optimizer state and the steps' activations
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
    say(f"setup: {setup_line(config)}")
    say(memory_line(memory))
    fetched = "" if config.manifest or prepared.manifest == Path(config.data) else \
        f" (the sample's images were fetched into {prepared.manifest.parent}, ready for the real run)"
    say(f"dry run: nothing trained, no run folder written{fetched}")
    return {"step_seconds": step_s, "stream_images_per_s": stream_images_s, "epoch_seconds": train_epoch_s + eval_s,
            "ram_bytes": machine_ram(), **memory}


MAC_MEMORY_GB = (8, 16, 18, 24, 32, 36, 48, 64, 96, 128, 192)
# Assumed: macOS lets Metal use about 2/3 to 3/4 of RAM (recommendedMaxWorkingSetSize; nearer 3/4 on
# the larger Macs); we take the lower 2/3, so "fits" holds on a 16 GB Mac too.
GPU_SHARE = 2 / 3
TIGHT = 0.75  # above this share of RAM the machine starts swapping or killing the run


def machine_ram() -> int:
    """Physical memory in bytes (macOS and Linux)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def setup_line(config: FinetuneConfig) -> str:
    """The combination measured: what decides the memory (so a user can try another one)."""
    lora = config.lora
    parts = [f"LoRA rank {lora.rank} (scale {lora.scale:g}) on {','.join(lora.targets)}" if lora.rank
             else "full fine-tuning (--lora R trains adapters only)",
             "gradient checkpointing" if config.grad_checkpoint else "no gradient checkpointing (--grad-checkpoint)",
             config.precision, f"batch {config.batch_size}"]
    return ", ".join(parts)


def memory_line(memory: dict[str, int], ram: int | None = None, gpu_budget: int | None = None) -> str:
    """Peak memory against this machine's RAM, and the smallest Mac whose GPU budget holds MLX's peak."""
    ram = ram or machine_ram()
    gpu_budget = gpu_budget or mx.device_info().get("max_recommended_working_set_size")
    rss, arrays = memory["max_rss_bytes"], memory.get("mlx_peak_bytes", memory["max_rss_bytes"])
    verdict = "fits" if rss <= TIGHT * ram else \
        "does NOT fit comfortably (try --lora 8, --grad-checkpoint or a smaller --batch-size)"
    line = (f"estimated peak memory: {gib(rss)} process RSS ({gib(arrays)} MLX arrays) = {rss / ram:.0%} of this "
            f"machine's {gib(ram)} RAM: {verdict}")
    if gpu_budget:
        line += f"; MLX's GPU budget here is {gib(gpu_budget)}: " + ("fits" if arrays <= gpu_budget else "too much")
    need = next((gb for gb in MAC_MEMORY_GB if arrays <= GPU_SHARE * gb * 2**30), None)
    mac = f"{need} GB of RAM or more" if need else f"more than {MAC_MEMORY_GB[-1]} GB of RAM"
    return line + (f"\non a Mac (Apple GPU) this needs {mac}: {math.ceil(arrays / 2**20)} MiB of MLX arrays "
                   f"measured here, against an assumed GPU share of {GPU_SHARE:.0%} of RAM")
