"""Fine-tune CLIP on your own records: the library behind finetune.py.

`prepare` reads the manifest (fetching first when given a metadata file), checks images,
builds captions and the split; `run` evaluates, trains, checkpoints and writes the run
folder; `dry_run` prints the plan and its measured cost instead of training.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..data.captions import CaptionBuilder, get_field, value_text
from ..models.clip import CLIP, load, write_json
from ..data.dataset import Item, check_images, read_manifest, split, split_sizes
from ..config import FinetuneConfig, ignored_on_resume
from ..errors import InputError
from ..outputs.export import export_hf
from ..data.imagefolder import FILE_COLUMN, metadata_file, write_metadata
from ..outputs.model_card import write_model_card
from ..data.fetcher import FetchConfig
from ..data.stream import TrainStream
from ..train import distributed
from ..train.checkpoint import (
    load_checkpoint,
    remove_partial_writes,
    resolve_checkpoint,
    restore_random_state,
    save_checkpoint,
)
from ..train.evaluate import COUNT_KEYS, EvalSet, evaluate
from ..train.optim import make_optimizer
from ..train.step import (
    NonFiniteError,
    Trainer,
    apply_locks,
    check_finite_weights,
    count_parameters,
    set_weights,
)

KILL_AT_ENV = "MLX_CLIP_KILL_AT"  # tests: where a run SIGKILLs itself (see KillSwitch)
KILL_AFTER_EPOCH_ENV = "MLX_CLIP_KILL_AFTER_EPOCH"  # older spelling of MLX_CLIP_KILL_AT=epoch:N
TIMING_KEYS = ("seconds", "train_images_per_s", "eval_seconds")
BEFORE_DETAILS = "eval_before.npz"  # epoch 0's per-item ranks and embeddings, for report.html
TEST_BEFORE = "eval_test_before.npz"  # the test set's per-item results before training (compare.py)
TEST_AFTER = "eval_test.npz"  # ... and with the best model, in split.json's test order
TEST_BEFORE_METRICS = "eval_test_before.json"  # the before scores themselves (a resumed run reads them)
AUTO_TEST_FRACTION = 0.1  # --test-fraction's default ...
MIN_AUTO_TEST = 20  # ... when it holds at least this many images; else no test set unless asked


@dataclass
class Prepared:
    """A run's data and model, ready to train."""

    config: FinetuneConfig
    manifest: Path
    items: list[Item]
    skipped_line: str | None
    captions: CaptionBuilder
    train_index: list[int]
    val_index: list[int]
    model: CLIP
    test_index: list[int] = field(default_factory=list)
    split_line: str = ""  # how many records share an image
    split_ids: dict = field(default_factory=dict)  # split.json
    dropped_empty: int = 0  # records whose caption rendered empty

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_index) / self.config.batch_size)

    def eval_set(self, index: list[int] | None = None) -> EvalSet:
        """The validation set, or the records at `index` (the test set)."""
        index = self.val_index if index is None else index
        label = self.config.label_field
        return EvalSet(
            image_paths=[str(self.items[i].image_path) for i in index],
            captions=[self.captions.first(i) for i in index],
            labels=[(value_text(get_field(self.items[i].record, label)) or None) if label else None
                    for i in index],
        )

    def train_stream(self) -> TrainStream:
        size = self.model.config.vision.image_size
        return TrainStream([self.items[i] for i in self.train_index], self.captions, self.model.tokenizer,
                           self.model.image_processor, size, self.config.batch_size, self.config.sample.seed,
                           self.config.augment, threads=self.config.threads, caption_index=self.train_index)


# --- fetching ----------------------------------------------------------------------------------------

BUNDLED_RECORDS = Path(__file__).resolve().parent / "demo" / "emoji" / "records.jsonl"  # see its README.md
BUNDLED_CAPTION = "{name}, an emoji of {subcategory}"
BUNDLED_LABEL_FIELD = "category"


def fetch_manifest(config: FinetuneConfig, say: Callable[[str], None] = print) -> Path:
    """Draw and fetch the sample of `config.data` (as fetch.py does); returns its manifest.jsonl."""
    from ..data.fetcher import fetch_records

    say(f"fetching images for {config.data} into {config.fetch.out}")
    summary = fetch_records(config.data, config.fetch, sample=config.sample.sample, margin=config.sample.margin,
                            stratify=config.sample.stratify, seed=config.sample.seed, log=say)
    say(str(summary))
    metadata = write_metadata(summary.manifest_path)  # as fetch.py does; only worth a line when it lists images
    if metadata.rows:
        say(str(metadata))
    return Path(summary.manifest_path)


def use_bundled_data(config: FinetuneConfig, say: Callable[[str], None] = print) -> None:
    """With no data/records.json and neither --data nor --manifest, train on the emoji set that
    ships inside the package (with captions and labels that suit it), so a fresh clone's first
    command runs instead of stopping at a missing file."""
    if config.manifest or config.data != FinetuneConfig.data or Path(config.data).exists():
        return
    config.data = str(BUNDLED_RECORDS)
    config.fetch = replace(config.fetch, path_field="image_path", url_field=None)
    config.captions = config.captions or [BUNDLED_CAPTION]
    config.label_field = config.label_field or BUNDLED_LABEL_FIELD
    say(f"no {FinetuneConfig.data}: training on the emoji set bundled with mlx_clip ({BUNDLED_RECORDS.parent}); "
        "for your own records pass --data RECORDS (JSON, JSONL, CSV or an ImageFolder)")


def _is_manifest(path: Path) -> bool:
    """A manifest.jsonl written by fetch.py (image_path and sha256 on its first record)."""
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and "image_path" in first and "sha256" in first
    return False


def resolve_manifest(config: FinetuneConfig, say: Callable[[str], None] = print) -> Path:
    use_bundled_data(config, say)
    if config.manifest:
        if config.sample.draws:
            raise InputError(f"{config.manifest}: --sample/--margin draw from --data; to train on a sample of a "
                             "manifest pass it as --data with --path-field image_path and another --out")
        return Path(config.manifest)
    data = Path(config.data)
    if data.is_dir():
        return _folder_manifest(config, data, say)
    if not data.is_file():
        raise InputError(f"{data}: records file not found (pass --data RECORDS or --manifest MANIFEST)")
    sampling = config.sample.draws or config.fetch.path_field
    if _is_manifest(data) and not sampling:
        return data  # fetch.py's output given as --data: use it as it is
    check_before_fetch(config)
    return fetch_manifest(config, say)


def check_before_fetch(config: FinetuneConfig) -> None:
    """What the records alone can show wrong (templates, label field, batch size against the
    sample's training split), before minutes to hours of downloads."""
    from ..data.records import load_records
    from ..data.sampling import choose_sample

    records = load_records(config.data, config.fetch.encoding)
    try:
        indices, _ = choose_sample(records.records, config.sample.sample, config.sample.margin,
                                   config.sample.stratify, config.sample.seed)
    except ValueError as err:
        raise InputError(f"{records.path}: {err}") from None
    sample = [records.records[i] for i in indices]
    CaptionBuilder(config.captions, sample)  # a template naming a field no record has
    _check_label_field(config, sample)
    _check_batch_size(config, split_sizes(len(sample), config.val_fraction, _test_fraction(config, len(sample)))[0],
                      f"the sample's training split (of {len(sample)} records, before any image fails)")


def _test_fraction(config: FinetuneConfig, n: int) -> float:
    """--test-fraction as given, else AUTO_TEST_FRACTION when that gives MIN_AUTO_TEST images or more."""
    if config.test_fraction is not None:
        return config.test_fraction
    return AUTO_TEST_FRACTION if round(n * AUTO_TEST_FRACTION) >= MIN_AUTO_TEST else 0.0


def _check_label_field(config: FinetuneConfig, records: list[dict]) -> None:
    if config.label_field and not any(get_field(r, config.label_field) not in (None, "") for r in records):
        raise InputError(f"--label-field {config.label_field!r}: no record has this field")


def _check_batch_size(config: FinetuneConfig, train_size: int, what: str) -> None:
    if config.batch_size > train_size:
        raise InputError(f"--batch-size {config.batch_size} is larger than {what} ({train_size} records); "
                         f"use --batch-size {max(1, train_size)} or less")


def _folder_manifest(config: FinetuneConfig, folder: Path, say: Callable[[str], None]) -> Path:
    """--data DIR: a folder fetch.py wrote (its manifest.jsonl, or a sample drawn from it), or an
    ImageFolder, whose metadata.jsonl / metadata.csv is read as records with file_name as the path."""
    manifest = folder / "manifest.jsonl"
    if _is_manifest(manifest):
        if not config.sample.draws:
            return manifest
        records, path_field = manifest, "image_path"
    else:
        records, path_field = metadata_file(folder), FILE_COLUMN
    if config.fetch.out.resolve() == folder.resolve():
        raise InputError(f"--data {folder} is read as records and --out is the same folder; pass another --out")
    fetch = replace(config.fetch, path_field=config.fetch.path_field or path_field)
    return fetch_manifest(replace(config, data=str(records), fetch=fetch), say)


# --- preparation -----------------------------------------------------------------------------------

def prepare(config: FinetuneConfig, say: Callable[[str], None] = print, model: CLIP | None = None) -> Prepared:
    """Manifest -> checked items, captions, split and model; all input errors surface here."""
    if config.precision not in ("float32", "bfloat16"):
        raise InputError(f"--precision must be float32 or bfloat16, got {config.precision!r}")
    if config.batch_size < 1 or config.epochs < 0:
        raise InputError("--batch-size must be >= 1 and --epochs >= 0")
    if not 0 < config.augment.crop_min_area <= 1:
        raise InputError(f"--crop-min-area must be in (0, 1], got {config.augment.crop_min_area}")
    if config.threads < 1:
        raise InputError(f"--threads must be >= 1, got {config.threads}")
    split_sizes(0, config.val_fraction, config.test_fraction or 0.0)  # the fractions, before any work
    manifest = resolve_manifest(config, say)
    items = read_manifest(manifest, config.fetch.id_field)
    check = check_images(items)
    skipped_line = check.line() if check.skipped else None
    if skipped_line:
        say(skipped_line)
    items = check.kept
    captions = CaptionBuilder(config.captions, [item.record for item in items])
    empty = [i for i, options in enumerate(captions.options) if not options]
    if empty:  # identical empty captions would teach every image the same text
        if len(empty) == len(items):
            raise InputError(f"{manifest}: every record's caption is empty; name fields that have text with --caption")
        say(f"dropped {len(empty)} records whose caption is empty (first: record {items[empty[0]].record_id!r})")
        items = [item for i, item in enumerate(items) if captions.options[i]]
        captions = CaptionBuilder(config.captions, [item.record for item in items])
    _check_label_field(config, [item.record for item in items])
    config.test_fraction = _test_fraction(config, len(items))
    parts = split(items, config.val_fraction, config.sample.seed, config.sample.stratify, config.test_fraction)
    position = {id(item): i for i, item in enumerate(items)}
    train_index, val_index, test_index = ([position[id(item)] for item in side]
                                          for side in (parts.train, parts.val, parts.test))
    _check_batch_size(config, len(train_index), "the training set")
    if model is None:
        model = load(config.model, dtype="float32")
    model.tokenizer  # noqa: B018  (a model without tokenizer files fails here, clearly)
    return Prepared(config, manifest, items, skipped_line, captions, train_index, val_index, model,
                    test_index, parts.line(), parts.ids(), len(empty))


# --- reporting -------------------------------------------------------------------------------------

METRIC_COLUMNS = [("i2t_R@1", "i2t@1"), ("i2t_R@5", "i2t@5"), ("i2t_R@10", "i2t@10"), ("t2i_R@1", "t2i@1"),
                  ("t2i_R@5", "t2i@5"), ("t2i_R@10", "t2i@10"), ("i2t_mean_rank", "i2t rank"),
                  ("t2i_mean_rank", "t2i rank"), ("zero_shot_acc", "0-shot")]


def table_header() -> str:
    return f"{'epoch':>5} {'loss':>8} " + " ".join(f"{title:>8}" for _, title in METRIC_COLUMNS)


def table_row(row: dict) -> str:
    loss = f"{row['train_loss']:8.4f}" if row.get("train_loss") is not None else f"{'-':>8}"
    cells = []
    for key, _ in METRIC_COLUMNS:
        value = row.get(key)
        cells.append(f"{'-':>8}" if value is None else (f"{value:8.1f}" if "rank" in key else f"{value:8.3f}"))
    label = "before" if row["epoch"] == 0 else str(row["epoch"])
    return f"{label:>5} {loss} " + " ".join(cells)


def peak_memory() -> dict[str, int]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss = rss if sys.platform == "darwin" else rss * 1024
    out = {"max_rss_bytes": int(rss)}
    if hasattr(mx, "get_peak_memory"):
        out["mlx_peak_bytes"] = int(mx.get_peak_memory())
    return out


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def save_plots(folder: Path, history: list[dict], step_losses: list[float]) -> list[Path]:
    """loss.png (per step and per epoch) and recall.png (R@k per epoch, both ways)."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    if step_losses:
        ax.plot(np.arange(1, len(step_losses) + 1), step_losses, lw=0.8, alpha=0.6,
                label="step (a short last batch has fewer negatives, so a lower loss)")
        steps_per_epoch = max(1, len(step_losses) // max(1, sum(1 for h in history if h["epoch"] > 0)))
        epochs = [(h["epoch"] * steps_per_epoch, h["train_loss"]) for h in history if h.get("train_loss") is not None]
        if epochs:
            ax.plot(*zip(*epochs), "o-", label="epoch mean")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    if step_losses:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "loss.png", dpi=110)
    plt.close(fig)
    written.append(folder / "loss.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "zero_shot_acc"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [np.nan if v is None else v for v in values], "o-" if "i2t" in key else "s--", label=key)
    ax.set_xlabel("epoch (0 = before fine-tuning)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "recall.png", dpi=110)
    plt.close(fig)
    written.append(folder / "recall.png")
    return written


# --- run -------------------------------------------------------------------------------------------

def _run_name(config: FinetuneConfig) -> str:
    if config.name:
        if not re.fullmatch(r"[\w.\-]+", config.name):
            raise InputError(f"--name {config.name!r}: use letters, digits, '.', '-' and '_' only")
        return config.name
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def latest_run(runs_dir: Path) -> Path:
    runs = [p for p in runs_dir.glob("*") if (p / "checkpoints" / "latest").is_file()]
    if not runs:
        raise InputError(f"{runs_dir}: no run with a checkpoint to resume (pass --name NAME)")
    return max(runs, key=lambda p: (p / "checkpoints" / "latest").stat().st_mtime)


def resume_config(config: FinetuneConfig, resume: str) -> tuple[FinetuneConfig, Path]:
    """The saved config of the run to resume and its checkpoint folder."""
    runs_dir = Path(config.runs_dir)
    if resume != "latest":
        checkpoint = resolve_checkpoint(resume, runs_dir)
        run_dir = checkpoint.parent.parent
    else:
        run_dir = runs_dir / config.name if config.name else latest_run(runs_dir)
        checkpoint = resolve_checkpoint("latest", run_dir / "checkpoints")
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    resumed = FinetuneConfig.from_dict(saved)
    resumed.runs_dir, resumed.name = str(run_dir.parent), run_dir.name
    recorded = (saved.get("resolved") or {}).get("manifest")
    if recorded and Path(recorded).is_file():  # the same records and split, never a new fetch
        resumed.manifest, resumed.fetch = recorded, FetchConfig(id_field=resumed.fetch.id_field)
        resumed.sample = replace(resumed.sample, sample=None, margin=None)
    return resumed, checkpoint


@dataclass
class KillSwitch:
    """Where a test run SIGKILLs itself, from $MLX_CLIP_KILL_AT: step:N (this process's Nth step),
    checkpoint:N (in the middle of epoch N's checkpoint write) or epoch:N (right after it)."""

    point: str | None = None
    n: int = 0
    steps: int = 0

    @classmethod
    def from_env(cls) -> "KillSwitch":
        after = os.environ.get(KILL_AFTER_EPOCH_ENV)
        point, _, n = (os.environ.get(KILL_AT_ENV) or (f"epoch:{after}" if after else "")).partition(":")
        return cls(point or None, int(n or 0))

    def at(self, point: str, n: int) -> None:
        if (point, n) == (self.point, self.n):
            os.kill(os.getpid(), signal.SIGKILL)

    def step(self) -> None:
        self.steps += 1
        self.at("step", self.steps)


def stopped_run(config: FinetuneConfig, resume: str | None) -> Path | None:
    """The folder `run(config, resume)` was writing when it stopped; None if it had none yet.
    (run() sets `config.name` of a fresh run; a resumed one is found as run() found it.)"""
    runs_dir = Path(config.runs_dir)
    try:
        if resume and resume != "latest":
            return resolve_checkpoint(resume, runs_dir).parent.parent
        if config.name:
            return runs_dir / config.name
        return latest_run(runs_dir) if resume else None
    except InputError:
        return None


def last_checkpoint_epoch(run_dir: Path | None) -> int | None:
    """The epoch of the run's `latest` checkpoint (None when it has none)."""
    pointer = run_dir / "checkpoints" / "latest" if run_dir else None
    try:
        return int(pointer.read_text(encoding="utf-8").strip().removeprefix("epoch-")) if pointer else None
    except (OSError, ValueError):  # no checkpoint yet, or a damaged pointer
        return None


class Float32View:
    """The float32 model to evaluate and save: the training model itself in float32; in
    bfloat16 a second CLIP holding the master weights, so the training model never flips
    dtype under its compiled functions."""

    def __init__(self, model: CLIP, trainer: Trainer):
        self.trainer = trainer
        self.model = model
        if trainer.precision != "float32":
            self.model = CLIP(model.config, model._tokenizer, model.image_processor)
            self.refresh()
            self.model.eval()

    def refresh(self) -> CLIP:
        if self.trainer.precision != "float32":
            set_weights(self.model, dict(tree_flatten(self.trainer.fp32_parameters())))
            mx.eval(self.model.parameters())
        return self.model


def run(config: FinetuneConfig, resume: str | None = None, progress: bool = True,
        say: Callable[[str], None] = print, model: CLIP | None = None) -> Path:
    """Train and write runs/NAME (config.json, metrics.json, plots, model/, export/, checkpoints/).

    Under mlx.launch (several processes) it trains data-parallel (mlx_clip.train.distributed):
    --batch-size is the global batch; only rank 0 prints and writes.
    """
    dist = distributed.init()
    if not dist.is_main:
        say, progress = (lambda *_: None), False
    checkpoint = None
    if resume:
        given = config
        config, checkpoint_path, checkpoint = dist.resume(config, resume, resume_config, load_checkpoint)
        say(f"resuming {Path(config.runs_dir) / config.name} from {checkpoint_path.name} "
            f"(settings from its config.json)")
        ignored = ignored_on_resume(given, config)
        if ignored:
            say("warning: a resumed run keeps its saved settings; ignored: " + ", ".join(ignored))
    config.name = _run_name(config)
    dist.check_batch_size(config.batch_size)
    prepared = prepare(config, say, model)
    model = prepared.model
    run_dir = Path(config.runs_dir) / config.name
    if not resume and (run_dir / "checkpoints" / "latest").is_file():
        raise InputError(f"{run_dir} already has a run; pass --resume to continue it or another --name")
    spe = prepared.steps_per_epoch
    total_steps, warmup_steps = config.total_steps(spe), config.optim.warmup_steps(config.total_steps(spe))
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(run_dir)  # a crash mid-write (or a full disk) left them
        write_json(run_dir / "config.json", {**config.to_dict(), "resolved": {
            "manifest": str(prepared.manifest), "records": len(prepared.items),
            "train_records": len(prepared.train_index), "val_records": len(prepared.val_index),
            "test_records": len(prepared.test_index), "test_fingerprint": prepared.split_ids["fingerprint"],
            "split": prepared.split_line, "dropped_empty_captions": prepared.dropped_empty,
            "steps_per_epoch": spe, "total_steps": total_steps,
            "warmup_steps": warmup_steps, "betas": list(config.optim.betas), "eps": config.optim.eps,
            "image_size": model.config.vision.image_size, "skipped": prepared.skipped_line}})
        write_json(run_dir / "split.json", prepared.split_ids)
    say(describe(prepared))
    if dist.active:
        say(dist.describe(config.batch_size))

    apply_locks(model, config.locks)
    trainer = dist.trainer(model, make_optimizer(config.optim, total_steps), config.precision, model.tokenizer.eos_token_id)
    stream = dist.stream(prepared.train_stream())
    eval_set = prepared.eval_set()
    history: list[dict] = []
    step_losses: list[float] = []
    best = {"epoch": None, "score": -math.inf}
    start_epoch = 1
    if checkpoint is not None:
        trainer.load_fp32_parameters(tree_unflatten(list(checkpoint.weights.items())))
        trainer.load_optimizer_state(checkpoint.optimizer_state)
        restore_random_state(checkpoint.random_state)
        info = checkpoint.info
        history, step_losses, best = info["history"], info["step_losses"], info["best"]
        start_epoch = info["epoch"] + 1
        mx.eval(trainer.state)

    view = Float32View(model, trainer)
    say(table_header())
    for row in history:
        say(table_row(row))
    if checkpoint is None:
        started = time.perf_counter()
        row = {"epoch": 0, "train_loss": None,
               **evaluate(view.refresh(), eval_set, config.label_prompt, dist=dist,
                          keep=run_dir / BEFORE_DETAILS if dist.is_main else None)}
        row["eval_seconds"] = time.perf_counter() - started
        history.append(row)
        say(table_row(row))
        if row.get("zero_shot_note"):
            say(row["zero_shot_note"])
        if prepared.test_index and dist.is_main:
            write_json(run_dir / TEST_BEFORE_METRICS,
                       evaluate(view.refresh(), prepared.eval_set(prepared.test_index), config.label_prompt,
                                keep=run_dir / TEST_BEFORE))

    kill = KillSwitch.from_env()
    for epoch in range(start_epoch, config.epochs + 1):
        mx.random.seed(config.sample.seed * 100_003 + epoch)  # epoch-determined, so a resumed run matches
        started = time.perf_counter()
        losses, sizes = train_epoch(trainer, stream, epoch, config.epochs, progress, on_step=kill.step)
        train_seconds = time.perf_counter() - started
        stuck = stuck_warning(epoch, losses, sizes, (epoch - 1) * spe, warmup_steps)
        step_losses.extend(losses)
        eval_model = view.refresh()
        eval_started = time.perf_counter()
        row = {"epoch": epoch, "train_loss": float(np.average(losses, weights=sizes)),  # per image
               "lr": float(trainer.optimizer.optimizers[0].learning_rate),
               **evaluate(eval_model, eval_set, config.label_prompt, dist=dist)}
        row.update(seconds=train_seconds, train_images_per_s=len(prepared.train_index) / train_seconds,
                   eval_seconds=time.perf_counter() - eval_started)
        if stuck:
            row["warning"] = stuck
        history.append(row)
        say(table_row(row))
        if stuck:
            say(stuck)
        score = row.get("mean_R@1", -row["train_loss"])
        if score > best["score"]:
            best = {"epoch": epoch, "score": score}
            if dist.is_main:
                check_finite_weights(eval_model.parameters(), f"{run_dir / 'model'} (epoch {epoch})")
                eval_model.save(run_dir / "model")
        if dist.is_main:  # atomic (temp folder + rename): a rank dying now leaves the previous one intact
            check_finite_weights(trainer.fp32_parameters(), f"checkpoint of epoch {epoch}")
            save_checkpoint(run_dir / "checkpoints", epoch, trainer.fp32_parameters(), trainer.optimizer.state,
                            {"step": epoch * spe, "seed": config.sample.seed, "history": history,
                             "step_losses": step_losses, "best": best,
                             "stream": "numpy default_rng([seed, epoch])"},
                            midway=partial(kill.at, "checkpoint", epoch))
        kill.at("epoch", epoch)
    if not dist.is_main:  # rank 0 writes the model, export, metrics and plots
        return run_dir

    if best["epoch"] is None:  # no training (--epochs 0): the starting model
        view.refresh().save(run_dir / "model")
    final = load(run_dir / "model")
    check_finite_weights(final.parameters(), str(run_dir / "model"))  # what export, --register and --push use
    test = held_out_test(prepared, final, run_dir)
    export_hf(final, run_dir / "export")
    memory = peak_memory()
    best_row = next((h for h in history if h["epoch"] == best["epoch"]), {})
    metrics = {"history": history, "best_epoch": best["epoch"], "best_mean_R@1": best_row.get("mean_R@1"),
               "best_by": "mean_R@1" if "mean_R@1" in best_row else "train_loss (no validation set)",
               "step_losses": step_losses, **memory,
               "train_records": len(prepared.train_index), "val_records": len(prepared.val_index),
               "skipped": prepared.skipped_line, "split": prepared.split_line, "test": test,
               "warnings": run_warnings(history, best, test)}
    write_json(run_dir / "metrics.json", metrics)
    write_model_card(run_dir / "export", card_info(prepared, history, best, test))
    save_plots(run_dir, history, step_losses)
    write_run_report(run_dir, prepared, final, history, best, step_losses, say)
    say(summary(run_dir, history, best, memory, test))
    return run_dir


def held_out_test(prepared: Prepared, final: CLIP, run_dir: Path) -> dict | None:
    """The test set's scores before training and with the best model (chosen on validation, so
    these are the unbiased figures); per-item results go to eval_test*.npz for compare.py."""
    if not prepared.test_index:
        return None
    test_set = prepared.eval_set(prepared.test_index)
    after = evaluate(final, test_set, prepared.config.label_prompt, keep=run_dir / TEST_AFTER)
    before = json.loads((run_dir / TEST_BEFORE_METRICS).read_text(encoding="utf-8"))
    return {"set": "test", "size": len(prepared.test_index), "fingerprint": prepared.split_ids["fingerprint"],
            "source": "held-out test set: not trained on, not used to pick the best epoch",
            "before": before, "after": after}


def test_line(test: dict) -> str:
    """The summary's held-out line: before -> after on the test set, with intervals."""
    def fmt(row: dict, key: str) -> str:
        ci = row.get(f"{key}_ci95")
        return f"{row[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    line = (f"held-out test ({test['size']} images, not used for training or picking the epoch): mean recall@1 "
            f"{fmt(test['before'], 'mean_R@1')} before -> {fmt(test['after'], 'mean_R@1')} after")
    if "zero_shot_acc" in test["after"] and "zero_shot_acc" in test["before"]:
        line += f"; zero-shot accuracy {fmt(test['before'], 'zero_shot_acc')} -> {fmt(test['after'], 'zero_shot_acc')}"
    return line


def write_run_report(run_dir: Path, prepared: Prepared, final: CLIP, history: list[dict], best: dict,
                     step_losses: list[float], say: Callable[[str], None] = print) -> Path | None:
    """runs/NAME/report.html (see mlx_clip.outputs.report); a failure here warns and never loses the run."""
    try:
        from ..outputs.report import write_report

        return write_report(run_dir, prepared, final, history, best, step_losses)
    except Exception as err:  # noqa: BLE001  (the model and metrics are already written)
        import traceback

        traceback.print_exc()
        say(f"warning: could not write {run_dir / 'report.html'}: {err}")
        return None


def card_info(prepared: Prepared, history: list[dict], best: dict, test: dict | None = None) -> dict:
    """What the export's model card says about this run (see mlx_clip.outputs.model_card)."""
    from collections import Counter

    config = prepared.config

    def scores(row: dict | None) -> dict:
        return {k: v for k, v in (row or {}).items()
                if k not in TIMING_KEYS + COUNT_KEYS + ("epoch", "lr", "warning", "zero_shot_note")}

    best_row = next((h for h in history if h["epoch"] == best["epoch"]), None)
    labels = None
    if config.label_field:
        counts = Counter(value_text(get_field(item.record, config.label_field)) or "(missing)"
                         for item in prepared.items)
        labels = {"field": config.label_field, "counts": dict(counts.most_common())}
    sample = config.sample.draws
    return {
        "base_model": config.model,
        "config": config.to_dict(),
        "caption_templates": config.captions or ["(default: built from the record's text fields)"],
        "metrics": ({"before": scores(test["before"]), "after": scores(test["after"]), "val_size": test["size"],
                     "set": "test"} if test else
                    {"before": scores(history[0]) if history and history[0]["epoch"] == 0 else {},
                     "after": scores(best_row), "val_size": len(prepared.val_index), "set": "validation"})
                   | {"warnings": run_warnings(history, best, test)},
        "data": {"source": config.manifest or config.data, "records": len(prepared.items),
                 "train": len(prepared.train_index), "val": len(prepared.val_index),
                 "test": len(prepared.test_index),
                 "sample": {"method": f"stratified by {config.sample.stratify}" if config.sample.stratify
                            else "simple random",
                            "size": config.sample.sample, "margin": config.sample.margin,
                            "seed": config.sample.seed} if sample else None,
                 "labels": labels},
    }


def train_epoch(trainer: Trainer, stream: TrainStream, epoch: int, epochs: int,
                progress: bool, on_step: Callable[[], None] | None = None) -> tuple[list[float], list[int]]:
    """One pass over the stream; each step's loss and batch size. `on_step` runs after each step."""
    from tqdm import tqdm

    losses, sizes = [], []
    bar = tqdm(total=len(stream.items), desc=f"epoch {epoch}/{epochs}", unit="img", disable=not progress,
               dynamic_ncols=True, leave=False)
    started = time.perf_counter()
    seen = 0
    for number, batch in enumerate(stream.epoch(epoch), 1):
        extra = {"valid": batch["valid"]} if "valid" in batch else {}  # a distributed shard
        try:
            loss = float(trainer.step(batch["input_ids"], batch["pixels"], groups=batch["image_group"], **extra))
        except NonFiniteError as err:  # the weights are spoilt: stop before anything is saved
            bar.close()
            raise NonFiniteError(f"training diverged at epoch {epoch}, step {(epoch - 1) * len(stream) + number} "
                                 f"({number} of the epoch): {err}; nothing of this epoch was saved, the last "
                                 "checkpoint and model/ keep the last finite epoch") from None
        losses.append(loss)
        sizes.append(batch.get("global_size", len(batch["record_id"])))
        seen += sizes[-1]
        bar.update(sizes[-1])
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{seen / (time.perf_counter() - started):.1f}")
        if on_step is not None:
            on_step()
    bar.close()
    return losses, sizes


def describe(prepared: Prepared) -> str:
    config, model = prepared.config, prepared.model
    report = prepared.captions.report(model.tokenizer.count_tokens, model.tokenizer.context_length)
    trainable = count_parameters(_trainable_after_locks(prepared))
    total = count_parameters(model.parameters())
    spe = prepared.steps_per_epoch
    total_steps = config.total_steps(spe)
    lines = [
        f"records: {len(prepared.items)} with images ({prepared.manifest})",
        f"split: {len(prepared.train_index)} train, {len(prepared.val_index)} validation (picks the best epoch), "
        + (f"{len(prepared.test_index)} test (held out for the before/after figures)" if prepared.test_index
           else "no test set (--test-fraction; the before/after figures come from validation)")
        + (f" (stratified by {config.sample.stratify})" if config.sample.stratify else "") + f"; {prepared.split_line}",
        f"captions: {report.line(model.tokenizer.context_length)}",
        f"example caption: {prepared.captions.first(prepared.train_index[0])!r}",
        f"model: {config.model} ({total / 1e6:.1f}M parameters, {trainable / 1e6:.2f}M trained), "
        f"{config.precision}, image {model.config.vision.image_size}px",
        f"schedule: {config.epochs} epochs x {spe} steps of {config.batch_size} = {total_steps} steps, "
        f"lr {config.optim.lr:g} (warmup {config.optim.warmup_steps(total_steps)} steps, cosine), "
        f"weight decay {config.optim.weight_decay:g}",
    ]
    return "\n".join(lines)


def _trainable_after_locks(prepared: Prepared):
    config = prepared.config
    apply_locks(prepared.model, config.locks)
    return prepared.model.trainable_parameters()


STUCK_TOLERANCE = 0.02  # a post-warmup epoch loss within 2 % of chance (or above it) is "stuck"


def stuck_warning(epoch: int, losses: list[float], sizes: list[int], first_step: int, warmup_steps: int) -> str | None:
    """A warning when this epoch's steps after warmup average a loss at chance level: ln(batch size),
    the loss of scores that tell no image from another, so the model is not learning."""
    after = [(loss, size) for k, (loss, size) in enumerate(zip(losses, sizes)) if first_step + k >= warmup_steps
             and size > 1]
    if not after:
        return None
    loss = float(np.mean([loss for loss, _ in after]))
    chance = float(np.mean([math.log(size) for _, size in after]))
    if loss < chance * (1 - STUCK_TOLERANCE):
        return None
    return (f"warning: epoch {epoch}: the training loss after warmup ({loss:.3f}) stays at chance level "
            f"(ln of the batch size = {chance:.3f}): the model is not learning; try another --lr or check "
            "that the captions tell the images apart")


def below_start_warning(history: list[dict], best: dict, test: dict | None = None) -> str | None:
    """Said plainly when the kept (best) epoch scores below the starting model on mean recall@1:
    on the held-out test set when there is one, else on validation."""
    if test:
        before, after, where = test["before"], test["after"], "held-out test"
    else:
        before = history[0] if history and history[0]["epoch"] == 0 else None
        after, where = next((h for h in history if h["epoch"] == best["epoch"]), None), "validation"
    if not before or not after or "mean_R@1" not in before or "mean_R@1" not in after:
        return None
    if after["mean_R@1"] >= before["mean_R@1"]:
        return None
    return (f"warning: the fine-tuned model scores below the starting model ({where} mean recall@1 "
            f"{before['mean_R@1']:.3f} before, {after['mean_R@1']:.3f} after at its best epoch "
            f"{best['epoch']}); the base model is the better choice for these records")


def run_warnings(history: list[dict], best: dict, test: dict | None = None) -> list[str]:
    """Every warning of a run (stuck epochs, a result below the start), for metrics, report and card."""
    warnings = [row["warning"] for row in history if row.get("warning")]
    below = below_start_warning(history, best, test)
    return warnings + ([below] if below else [])


def summary(run_dir: Path, history: list[dict], best: dict, memory: dict, test: dict | None = None) -> str:
    before = history[0] if history and history[0]["epoch"] == 0 else None
    best_row = next((h for h in history if h["epoch"] == best["epoch"]), None)
    lines = []
    if before and best_row and "mean_R@1" in before:
        lines.append(f"validation mean recall@1: {before['mean_R@1']:.3f} before -> {best_row['mean_R@1']:.3f} "
                     f"after (best epoch {best['epoch']}; validation picked it, so this is optimistic)")
    if test:
        lines.append(test_line(test))
    lines += run_warnings(history, best, test)
    if best_row and "zero_shot_acc" in best_row and before and "zero_shot_acc" in before:
        lines.append(f"zero-shot accuracy: {before['zero_shot_acc']:.3f} before -> {best_row['zero_shot_acc']:.3f} after")
    peak = f"peak memory: {gib(memory['max_rss_bytes'])} process RSS"
    if "mlx_peak_bytes" in memory:
        peak += f", {gib(memory['mlx_peak_bytes'])} MLX arrays"
    lines += [peak, f"wrote {run_dir}: config.json metrics.json report.html loss.png recall.png model/ export/ checkpoints/"]
    return "\n".join(lines)


# --- dry run ---------------------------------------------------------------------------------------

def dry_run(config: FinetuneConfig, say: Callable[[str], None] = print, measure_steps: int = 3,
            model: CLIP | None = None) -> dict[str, float]:
    """Print what the run would do and its measured cost (a few real steps on real batches); train nothing."""
    prepared = prepare(config, say, model)
    model = prepared.model
    say(describe(prepared))
    spe = prepared.steps_per_epoch
    apply_locks(model, config.locks)
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
