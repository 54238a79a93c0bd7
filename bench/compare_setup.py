"""What both sides of bench/mlx_vs_torch.py share: model sizes, settings, the synthetic batch, the
initial weights both start from, and the matmul FLOPs of each case."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = {
    "tiny": dict(vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                             image_size=64, patch_size=16),
                 text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
                 projection_dim=64),
    "b32": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=32),
                text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                projection_dim=512),
    "l14": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=224, patch_size=14),
                text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
                projection_dim=768),
}
CONFIGS["b16"] = dict(CONFIGS["b32"], vision=dict(CONFIGS["b32"]["vision"], patch_size=16))  # B/32 with 16-px patches
CASES = ("train", "train-lock-text", "embed")
TORCH_ADAMW = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
"""PyTorch's AdamW implementations, by name, as torch.optim.AdamW keyword arguments."""
EOS, BOS, VOCAB = 49407, 49406, 49408


@dataclass
class Settings:
    config: str = "b32"
    batch: int = 32
    precision: str = "float32"
    steps: int = 5
    warmup: int = 2
    caption_tokens: tuple[int, int] = (8, 40)
    device: str = "auto"
    seed: int = 0
    repeats: int = 1
    torch_adamw: str = "default"  # PyTorch's AdamW implementation: default (its per-tensor loop on CPU), foreach or fused


@dataclass
class Result:
    """One (framework, case) run in its own process."""

    framework: str
    case: str
    device: str
    images_per_s: float
    step_seconds: list[float]
    peak_rss_bytes: int
    peak_framework_bytes: int | None
    text_length: int
    first_loss: float | None = None
    extra: dict = field(default_factory=dict)


def add_torch_adamw_flag(parser) -> None:
    """--torch-adamw, fused by default: on the CPU PyTorch's default AdamW is a per-tensor loop (10x
    slower than fused here), and a fair comparison takes each side at its best."""
    parser.add_argument("--torch-adamw", choices=tuple(TORCH_ADAMW), default="fused",
                        help="PyTorch's AdamW: fused (default: its fastest on CPU), foreach, or default "
                             "(torch.optim.AdamW() as written: a per-tensor loop on CPU; the tables measured "
                             "before 2026-12-06 used it)")


def hf_config(name: str):
    from transformers import CLIPConfig

    spec = CONFIGS[name]
    return CLIPConfig(text_config=dict(spec["text"], max_position_embeddings=77),
                      vision_config=dict(spec["vision"]), projection_dim=spec["projection_dim"])


def synthetic_batch(settings: Settings, image_size: int):
    """Token ids shaped like catalogue captions (BOS, words, EOS, padding) and random pixels (NHWC)."""
    import numpy as np

    rng = np.random.default_rng(settings.seed)
    low, high = settings.caption_tokens
    ids = np.full((settings.batch, 77), EOS, dtype=np.int32)
    for row in range(settings.batch):
        n = int(rng.integers(low, high + 1))
        ids[row, 0] = BOS
        ids[row, 1:n - 1] = rng.integers(0, 49000, n - 2)
        ids[row, n - 1] = EOS
    pixels = rng.standard_normal((settings.batch, image_size, image_size, 3), dtype=np.float32)
    return ids, pixels


def initial_weights_path(settings: Settings, folder: Path) -> Path:
    """Save transformers' random initialisation once; both frameworks start from it."""
    import torch
    from transformers import CLIPModel

    path = folder / f"init-{settings.config}-{settings.seed}"
    if not (path / "model.safetensors").exists():
        torch.manual_seed(settings.seed)
        CLIPModel(hf_config(settings.config)).save_pretrained(path)
    return path


def flops_per_pair(settings: Settings, text_length: int, case: str) -> float:
    """Matmul FLOPs per image-caption pair (forward x3 for a training step)."""
    spec = CONFIGS[settings.config]
    v, t, proj = spec["vision"], spec["text"], spec["projection_dim"]

    def tower(d, ff, layers, tokens):
        return layers * (2 * tokens * (4 * d * d + 2 * d * ff) + 4 * tokens * tokens * d)

    patches = (v["image_size"] // v["patch_size"]) ** 2
    vision = tower(v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"], patches + 1)
    vision += 2 * patches * v["patch_size"] ** 2 * 3 * v["hidden_size"] + 2 * v["hidden_size"] * proj
    text = tower(t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"], text_length)
    text += 2 * t["hidden_size"] * proj
    if case == "embed":
        return vision
    if case == "train-lock-text":
        return 3 * vision + text
    return 3 * (vision + text)


def median_seconds(fn, steps: int, warmup: int = 2, fastest: bool = False) -> float:
    """Median seconds of `fn` over `steps` calls after `warmup` (or the fastest call: on shared
    cores the fastest is the nearest to a quiet machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if fastest else statistics.median(times)
