#!/usr/bin/env python
"""MLX (this project's code) vs PyTorch (transformers CLIPModel) on the same CLIP, batch and data.

  python bench/compare.py --config b32 --batch 32
  python bench/compare.py --config tiny --steps 2 --json /tmp/smoke.json     # CI smoke test

Cases: a full training step (AdamW, contrastive loss), a training step with the text tower
locked, and image-embedding inference. Each (framework, case) runs in its own child process,
so peak memory is measured cleanly and the two thread pools never compete. Both frameworks
start from the same weights (transformers' initialisation, converted) and see the same token
ids and pixels. Reports images/s (median over measured steps after warm-up), peak memory,
achieved GFLOPS and the MLX/PyTorch ratio, as a table and as JSON.

Device auto: Metal vs MPS on a Mac, CUDA vs CUDA where present, CPU vs CPU otherwise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "tiny": dict(vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                             image_size=64, patch_size=16),
                 text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
                 projection_dim=64),
    "b32": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=32),
                text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                projection_dim=512),
    "b16": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=16),
                text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                projection_dim=512),
    "l14": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=224, patch_size=14),
                text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
                projection_dim=768),
}
CASES = ("train", "train-lock-text", "embed")
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


@dataclass
class Result:
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


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed(fn, settings: Settings) -> list[float]:
    for _ in range(settings.warmup):
        fn()
    times = []
    for _ in range(settings.steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_mlx(settings: Settings, case: str, init: Path) -> Result:
    import mlx_clip  # first: OpenBLAS under MLX on Linux
    import mlx.core as mx
    import numpy as np

    from mlx_clip.models.clip import CLIP
    from mlx_clip.models.config import CLIPConfig
    from mlx_clip.train.optim import OptimConfig, make_optimizer
    from mlx_clip.train.step import LockConfig, Trainer, apply_locks, trim_padding
    from mlx_clip.models.weights import hf_to_mlx, read_weights

    device = "cpu" if settings.device == "cpu" or not mx.is_available(mx.gpu) else "gpu"
    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    config = CLIPConfig.from_file(init / "config.json")
    model = CLIP(config)
    weights = hf_to_mlx(read_weights(init)[0])
    dtype = mx.bfloat16 if settings.precision == "bfloat16" else mx.float32
    model.load_weights(list(weights.items()))
    del weights  # as mlx_clip.load leaves it: the model holds the only reference
    ids, pixels = synthetic_batch(settings, config.vision.image_size)
    mx.eval(model.parameters())
    mx.reset_peak_memory()
    first_loss = None
    text_length = trim_padding(ids, EOS).shape[1]
    if case == "embed":
        if dtype != mx.float32:
            model.set_dtype_all(dtype)
        pixels_mx = mx.array(pixels)

        def fn():
            mx.eval(model.embed_pixels(pixels_mx))
    else:
        apply_locks(model, LockConfig(lock_text=case == "train-lock-text"))
        optimizer = make_optimizer(OptimConfig(lr=1e-5, weight_decay=0.1, warmup=0), total_steps=1000)
        trainer = Trainer(model, optimizer, settings.precision, eos_token_id=EOS)
        first_loss = float(trainer.step(ids, pixels))

        def fn():
            trainer.step(ids, pixels)
    times = _timed(fn, settings)
    active_before = mx.get_active_memory()
    fn()
    leak = mx.get_active_memory() - active_before  # memory kept from one step to the next
    from mlx_clip._blas import describe_blas

    return Result("mlx", case, f"mlx-{device}", settings.batch / statistics.median(times), times,
                  _peak_rss(), int(mx.get_peak_memory()), text_length, first_loss,
                  {"blas": describe_blas() if device == "cpu" else "gpu", "mlx_version": mx.__version__,
                   "active_memory_growth_per_step_bytes": int(leak)})


def run_torch(settings: Settings, case: str, init: Path) -> Result:
    import torch
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if settings.device == "cpu":
        device = "cpu"
    elif torch.cuda.is_available():
        device = "cuda"
    elif torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    dtype = torch.bfloat16 if settings.precision == "bfloat16" else torch.float32
    model = CLIPModel.from_pretrained(init).to(device)
    ids_np, pixels_np = synthetic_batch(settings, model.config.vision_config.image_size)
    # Padded to the longest caption in the batch, as CLIPProcessor(padding=True) does.
    length = int((ids_np == EOS).argmax(axis=1).max()) + 1
    ids = torch.tensor(ids_np[:, :length], dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    pixels = torch.tensor(pixels_np, device=device).permute(0, 3, 1, 2).contiguous()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
        elif device == "mps":
            torch.mps.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first_loss = None
    if case == "embed":
        model = model.to(dtype).eval()
        pixels = pixels.to(dtype)

        def fn():
            with torch.inference_mode():
                features = model.get_image_features(pixel_values=pixels)
                features = features.pooler_output if hasattr(features, "pooler_output") else features
                torch.nn.functional.normalize(features, dim=-1)
            sync()
    else:
        model.train()
        if case == "train-lock-text":
            for p in list(model.text_model.parameters()) + list(model.text_projection.parameters()):
                p.requires_grad_(False)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            skip = (name.endswith(("bias", "logit_scale", "class_embedding")) or "norm" in name
                    or "layrnorm" in name or ("embedding" in name and not name.endswith("patch_embedding.weight")))
            (no_decay if skip else decay).append(p)
        optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                       {"params": decay, "weight_decay": 0.1}],
                                      lr=1e-5, betas=(0.9, 0.98), eps=1e-6)
        autocast = torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32)

        def fn():
            with autocast:
                loss = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(max=4.6052)
            sync()
            return loss

        first_loss = float(fn().detach())
    times = _timed(fn, settings)
    framework_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return Result("torch", case, f"torch-{device}", settings.batch / statistics.median(times), times,
                  _peak_rss(), framework_peak, length, first_loss,
                  {"threads": torch.get_num_threads(), "torch_version": torch.__version__,
                   "blas": "MKL" if torch.backends.mkl.is_available() else "default"})


def _child(framework: str, settings: Settings, case: str, init: str, queue) -> None:
    try:
        runner = run_mlx if framework == "mlx" else run_torch
        queue.put(asdict(runner(settings, case, Path(init))))
    except Exception as err:  # reported by the parent
        import traceback

        queue.put({"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})


def run_isolated(framework: str, settings: Settings, case: str, init: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(framework, settings, case, str(init), queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"{framework} {case} failed: {result['error']}\n{result['traceback']}")
    return result


def gemm_gflops(device: str) -> float:
    """This machine's fp32 matmul rate through MLX (the ceiling's yardstick)."""
    import mlx_clip  # noqa: F401
    import mlx.core as mx

    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    n = 4096 if device == "gpu" else 1536
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b, a @ b)
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        mx.eval(a @ b)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="b32", help="model size (default b32: ViT-B/32)")
    parser.add_argument("--batch", type=int, default=32, help="images (and captions) per step (default 32)")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="compute precision for both frameworks (bfloat16 is for GPUs; slow on CPUs)")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per case (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (default 2)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto",
                        help="auto: Metal/MPS on a Mac, CUDA where present, else CPU; cpu forces the CPU")
    parser.add_argument("--caption-tokens", default="8,40",
                        help="min,max tokens per synthetic caption, BOS and EOS included (default 8,40)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mlx-clip-bench",
                        help="where the shared initial weights are kept")
    args = parser.parse_args(argv)
    low, high = (int(x) for x in args.caption_tokens.split(","))
    settings = Settings(args.config, args.batch, args.precision, args.steps, args.warmup, (low, high), args.device)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    args.cache.mkdir(parents=True, exist_ok=True)
    init = initial_weights_path(settings, args.cache)

    report: dict = {"machine": describe_machine(), "settings": asdict(settings), "cases": {}}
    print(f"{report['machine']} | config {settings.config}, batch {settings.batch}, {settings.precision}")
    print(f"{'case':<16} {'MLX img/s':>10} {'torch img/s':>12} {'ratio':>6} {'MLX GFLOPS':>11} "
          f"{'torch GFLOPS':>13} {'MLX peak':>9} {'torch peak':>11}  devices")
    mlx_device = None
    for case in cases:
        mlx_result = run_isolated("mlx", settings, case, init)
        torch_result = run_isolated("torch", settings, case, init)
        mlx_device = mlx_result["device"].split("-")[1]
        gflop = {r["framework"]: flops_per_pair(settings, r["text_length"], case) / 1e9
                 for r in (mlx_result, torch_result)}
        entry = {
            "mlx_images_per_s": mlx_result["images_per_s"],
            "torch_images_per_s": torch_result["images_per_s"],
            "ratio": mlx_result["images_per_s"] / torch_result["images_per_s"],
            "mlx_gflops": gflop["mlx"] * mlx_result["images_per_s"],
            "torch_gflops": gflop["torch"] * torch_result["images_per_s"],
            "gflop_per_pair": gflop,
            "mlx_peak_rss_bytes": mlx_result["peak_rss_bytes"],
            "torch_peak_rss_bytes": torch_result["peak_rss_bytes"],
            "mlx_peak_allocated_bytes": mlx_result["peak_framework_bytes"],
            "torch_peak_allocated_bytes": torch_result["peak_framework_bytes"],
            "mlx_first_loss": mlx_result["first_loss"],
            "torch_first_loss": torch_result["first_loss"],
            "mlx": mlx_result,
            "torch": torch_result,
        }
        report["cases"][case] = entry
        on_gpu = mlx_device == "gpu" and entry["torch_peak_allocated_bytes"] is not None
        entry["peak_compared"] = "device memory allocated" if on_gpu else "process resident memory"
        peaks = [entry[f"{side}_peak_allocated_bytes" if on_gpu else f"{side}_peak_rss_bytes"] for side in ("mlx", "torch")]
        print(f"{case:<16} {entry['mlx_images_per_s']:>10.2f} {entry['torch_images_per_s']:>12.2f} "
              f"{entry['ratio']:>5.2f}x {entry['mlx_gflops']:>11.1f} {entry['torch_gflops']:>13.1f} "
              f"{peaks[0] / 2**30:>8.2f}G {peaks[1] / 2**30:>10.2f}G"
              f"  {mlx_result['device']} vs {torch_result['device']}")
    if report["cases"]:
        first = next(iter(report["cases"].values()))
        print(f"MLX {first['mlx']['extra']['mlx_version']} on {first['mlx']['extra']['blas']}; PyTorch "
              f"{first['torch']['extra']['torch_version']} on {first['torch']['extra']['blas']}, "
              f"{first['torch']['extra']['threads']} threads")
    peak = gemm_gflops(mlx_device or "cpu")
    report["mlx_gemm_gflops"] = peak
    for case, entry in report["cases"].items():
        entry["ceiling_images_per_s"] = peak / entry["gflop_per_pair"]["mlx"]
        entry["mlx_share_of_ceiling"] = entry["mlx_images_per_s"] / entry["ceiling_images_per_s"]
    print(f"fp32 GEMM through MLX: {peak:.0f} GFLOPS; MLX share of that ceiling: " + ", ".join(
        f"{c} {e['mlx_share_of_ceiling']:.0%}" for c, e in report["cases"].items()))
    compared = {e["peak_compared"] for e in report["cases"].values()}
    print(f"peak = {', '.join(sorted(compared))} of the process running that case "
          "(weights, activations, optimizer state)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
