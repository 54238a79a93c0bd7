"""The settings of a fine-tuning run: what runs/NAME/config.json holds and what --resume reads back."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .data.stream import AugmentConfig
from .train.optim import OptimConfig


@dataclass
class FinetuneConfig:
    """Everything a run depends on; written to runs/NAME/config.json."""

    model: str = "openai/clip-vit-base-patch32"
    runs_dir: str = "runs"
    name: str | None = None
    data: str = "data/records.json"
    manifest: str | None = None
    fetch: dict[str, Any] = field(default_factory=dict)  # fetch.py's flags: url_field ... sample, seed
    id_field: str | None = None
    stratify: str | None = None
    val_fraction: float = 0.1
    test_fraction: float | None = None  # None: AUTO_TEST_FRACTION when enough records; resolved in prepare
    captions: list[str] = field(default_factory=list)
    label_field: str | None = None
    label_prompt: str | list[str] = "a photo of {label}"  # several: a prompt ensemble (evaluate.class_embeddings)
    batch_size: int = 32
    epochs: int = 5
    lr: float = 1e-5
    warmup: float = 0.1  # fraction of all steps when < 1, else a step count
    weight_decay: float = 0.1
    seed: int = 0
    lock_image: bool = False
    lock_text: bool = False
    unlock_last: int = 0
    precision: str = "float32"
    hflip: bool = True
    vflip: bool = False
    rotate: float = 0.0
    color_jitter: float = 0.0
    crop_min_area: float = 0.6
    threads: int = 4

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        if "val_fraction" in data and "test_fraction" not in data:  # a run from before test sets
            data = {**data, "test_fraction": 0.0}
        return cls(**{k: v for k, v in data.items() if k in known})

    def optim(self, steps_per_epoch: int) -> OptimConfig:
        total = max(1, steps_per_epoch * self.epochs)
        warmup = int(round(self.warmup * total)) if self.warmup < 1 else int(self.warmup)
        return OptimConfig(lr=self.lr, weight_decay=self.weight_decay, warmup_steps=warmup, total_steps=total)

    def augment(self) -> AugmentConfig:
        return AugmentConfig(crop_area=(self.crop_min_area, 1.0), hflip=self.hflip, vflip=self.vflip,
                             rotate=self.rotate, color_jitter=self.color_jitter)
