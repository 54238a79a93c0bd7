"""--dry-run: what the run would do and its measured cost (a few real steps on real batches),
without training or writing a run folder; from a records file it fetches only the images the
measured batches need, then estimates the sample's and the whole catalogue's epoch from them."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np

from ..settings import FinetuneConfig
from ..data.dataset import split_sizes
from ..data.sampling import choose_sample
from ..data.source import check_before_fetch, is_manifest, resolved_test_fraction, use_bundled_data
from ..errors import InputError
from ..models.clip import CLIP
from ..train.optim import make_optimizer
from ..train.step import Trainer, count_parameters
from ..wording import counted
from .console import RunSize, describe, duration, gib, peak_memory
from .prepare import prepare


DRY_RUN_LISTS = "dry-run-"  # dry-run-manifest.jsonl: a sample fetched before keeps its manifest.jsonl


@dataclass
class Plan:
    """How many records the real run would train and evaluate on: its sample, and the whole catalogue."""

    sample: int  # records the run's --sample / --margin draws (all of them without)
    catalogue: int  # every record of the file (`--sample` left out)
    fetched_for_measure: int = 0  # records fetched to measure on (0: the images were already there)


def needs_fetch(config: FinetuneConfig) -> bool:
    """Whether the run would fetch images from a records file first (a manifest, or a folder
    fetch.py wrote or an ImageFolder, are measured as they are)."""
    data = Path(config.data)
    if config.manifest or not data.is_file():
        return False
    return bool(config.sample.draws or config.fetch.path_field or not is_manifest(data))


def measuring_config(config: FinetuneConfig, measure_steps: int) -> tuple[FinetuneConfig, Plan | None]:
    """With a records file to fetch: a config that fetches only the records the measured batches
    need (a sample of measure_steps x batch size, all of it trained on), and the real run's sizes.
    `config` has been through use_bundled_data."""
    if not needs_fetch(config):
        return config, None
    records = check_before_fetch(config)
    try:
        chosen, _ = choose_sample(records.records, config.sample.sample, config.sample.margin,
                                  config.sample.stratify, config.sample.seed)
    except ValueError as err:
        raise InputError(f"{records.path}: {err}") from None
    needed = min(len(chosen), measure_steps * config.batch_size)
    small = replace(config, sample=replace(config.sample, sample=needed, margin=None), val_fraction=0.0,
                    test_fraction=0.0, fetch=replace(config.fetch, list_prefix=DRY_RUN_LISTS))
    return small, Plan(len(chosen), len(records.records), needed)


def dry_run(config: FinetuneConfig, say: Callable[[str], None] = print, measure_steps: int = 3,
            model: CLIP | None = None) -> dict[str, float]:
    """Print what the run would do and its measured cost (a few real steps on real batches); train
    nothing. From a records file only the measured batches' images are fetched, not the sample."""
    config = use_bundled_data(config, say)  # the run's settings: its sizes, fractions, epochs
    measured_config, plan = measuring_config(config, measure_steps)
    if plan:
        say(f"dry run: fetching only the {plan.fetched_for_measure} images that {measure_steps} measured steps "
            f"need (of the sample's {plan.sample:,}); the run fetches the rest")
    prepared = prepare(measured_config, say, model)
    model = prepared.model
    if plan is None:  # measured on the run's own records: its resolved settings
        config, plan = prepared.config, Plan(len(prepared.items), len(prepared.items))
    run_size = None
    if plan.fetched_for_measure:  # prepared holds the measured images only: describe the run's own sizes
        run_size = RunSize(plan.sample, plan.catalogue, *split_sizes(
            plan.sample, config.val_fraction, resolved_test_fraction(config, plan.sample)))
    say(describe(prepared, count_parameters(model.trainable_parameters()), run_size))
    spe = prepared.steps_per_epoch
    trainer = Trainer(model, make_optimizer(config.optim, config.total_steps(spe)), config.precision, model.tokenizer.eos_token_id)
    stream = prepared.train_stream(model)
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
    # full batches only, where there are any: a short last batch (failed downloads, the split) is a new
    # shape, so it compiled again inside the measurement (0.03 s steps measured as 0.6 s) and its images
    # were counted as a whole batch's
    full = [b for b in batches if len(b["record_id"]) == len(batches[0]["record_id"])] or batches
    for i in range(measure_steps):
        batch = full[i % len(full)]
        started = time.perf_counter()
        trainer.step(batch["input_ids"], batch["pixels"], groups=batch["image_group"])
        step_times.append(time.perf_counter() - started)
    step_s = float(np.median(step_times[1:])) if len(step_times) > 1 else step_times[0]
    started = time.perf_counter()
    mx.eval(model.embed_pixels(batches[0]["pixels"]))
    eval_per_image = (time.perf_counter() - started) / len(batches[0]["record_id"])
    memory = peak_memory()
    cost = EpochCost(config, step_s, stream_images_s, eval_per_image)
    say(f"measured: {measure_steps} steps of {config.batch_size} images: first {step_times[0]:.2f}s (compiles), "
        f"then {step_s:.2f}s/step = {config.batch_size / step_s:.1f} images/s; "
        f"data stream alone {stream_images_s:.1f} images/s")
    epoch_s = cost.epoch_seconds(plan.sample)
    say(f"estimated time per epoch: {cost.line(plan.sample)}; all {counted(config.epochs, 'epoch')} + evaluation before: "
        f"{duration(config.epochs * epoch_s + cost.eval_seconds(plan.sample))}")
    if plan.catalogue > plan.sample:
        say(f"the whole catalogue ({plan.catalogue:,} records, --sample left out): {cost.line(plan.catalogue)} "
            f"per epoch on this machine; peak memory as below (it grows with the batch, not the records)")
    say(f"setup: {setup_line(config)}")
    say(memory_line(memory))
    say(mac_estimate(model, prepared, step_s, plan.catalogue, cost, memory))
    fetched = (f" (the measured images were fetched into {prepared.manifest.parent} and listed in "
               f"{prepared.manifest.name}; the run reuses them)") if plan.fetched_for_measure else ""
    say(f"dry run: nothing trained, no run folder written{fetched}")
    return {"step_seconds": step_s, "stream_images_per_s": stream_images_s, "epoch_seconds": epoch_s,
            "catalogue_epoch_seconds": cost.epoch_seconds(plan.catalogue), "ram_bytes": machine_ram(), **memory}


@dataclass
class EpochCost:
    """Measured rates -> the time of an epoch over N records (split as the run splits them)."""

    config: FinetuneConfig
    step_seconds: float
    stream_images_per_s: float
    eval_seconds_per_image: float

    def sizes(self, records: int) -> tuple[int, int]:
        train, val, test = split_sizes(records, self.config.val_fraction, resolved_test_fraction(self.config, records))
        return train, val

    def train_seconds(self, records: int) -> float:
        steps = self.config.steps_per_epoch(self.sizes(records)[0])
        return max(self.step_seconds, self.config.batch_size / self.stream_images_per_s) * steps

    def eval_seconds(self, records: int) -> float:
        return self.eval_seconds_per_image * self.sizes(records)[1]

    def epoch_seconds(self, records: int) -> float:
        return self.train_seconds(records) + self.eval_seconds(records)

    def line(self, records: int) -> str:
        return (f"{duration(self.epoch_seconds(records))} (train {duration(self.train_seconds(records))}, "
                f"eval {duration(self.eval_seconds(records))})")


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
    verdict = ("fits" if rss <= TIGHT * ram else
               "does NOT fit comfortably (try --lora 8, --grad-checkpoint or a smaller --batch-size)")
    line = (f"estimated peak memory: {gib(rss)} process RSS ({gib(arrays)} MLX arrays) = {rss / ram:.0%} of this "
            f"machine's {gib(ram)} RAM: {verdict}")
    if gpu_budget:
        line += f"; MLX's GPU budget here is {gib(gpu_budget)}: " + ("fits" if arrays <= gpu_budget else "too much")
    need = next((gb for gb in MAC_MEMORY_GB if arrays <= GPU_SHARE * gb * 2**30), None)
    mac = f"{need} GB of RAM or more" if need else f"more than {MAC_MEMORY_GB[-1]} GB of RAM"
    return line + (f"\non a Mac (Apple GPU) this needs {mac}: {math.ceil(arrays / 2**20)} MiB of MLX arrays "
                   f"measured here, against an assumed GPU share of {GPU_SHARE:.0%} of RAM")


# A 16 GB M1 is the users' machine; nothing here can run on one, so its figures are estimates with
# their basis said: compute from the model's size, memory from the MLX arrays measured here.
M1_GPU_FLOPS = 2.6e12  # Apple M1, 8-core GPU: Apple's fp32 peak
M1_UTILISATION = 0.35  # assumed share of that peak a training step reaches (an assumption, not measured)
M1_RAM_GB = 16


def training_flops_per_image(model: CLIP, text_tokens: float) -> float:
    """About 6 x parameters x tokens per tower (forward 2, backward 4; attention's quadratic term,
    small at 50 image and <= 77 text tokens, left out)."""
    vision = model.config.vision
    image_tokens = vision.num_patches + 1  # and the class token
    return 6 * (count_parameters(model.vision_model.parameters()) * image_tokens
                + count_parameters(model.text_model.parameters()) * text_tokens)


def mac_estimate(model: CLIP, prepared, step_s: float, catalogue: int, cost: EpochCost,
                 memory: dict[str, int] | None = None) -> str:
    """The whole catalogue's epoch and the memory on a 16 GB M1, stated as an estimate with its basis."""
    tokens = prepared.caption_check.median_tokens if prepared.caption_check else 77
    flops = training_flops_per_image(model, tokens)
    image_s = flops / (M1_GPU_FLOPS * M1_UTILISATION)
    train_images = cost.sizes(catalogue)[0]
    here = prepared.config.batch_size / step_s
    arrays = (memory or peak_memory()).get("mlx_peak_bytes")
    fits = "" if arrays is None else (
        f"; memory: {math.ceil(arrays / 2**20)} MiB of MLX arrays measured here against about "
        f"{GPU_SHARE * M1_RAM_GB:.1f} GB the GPU may use: " + ("fits" if arrays <= GPU_SHARE * M1_RAM_GB * 2**30
                                                                 else "does NOT fit"))
    return (f"estimate for a {M1_RAM_GB} GB M1 (not measured): about {duration(image_s * train_images)} of training "
            f"per epoch of the whole catalogue ({train_images:,} training images; {1 / image_s:,.0f} images/s "
            f"against {here:.1f} measured here), from {flops / 1e9:.3g} GFLOP per training image (6 x parameters "
            f"x tokens) at an assumed {M1_UTILISATION:.0%} of the M1 GPU's {M1_GPU_FLOPS / 1e12:.1f} TFLOPS fp32"
            + fits)
