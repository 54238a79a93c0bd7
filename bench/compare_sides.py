"""The two sides of bench/mlx_vs_torch.py, each run in its own child process: MLX runs this project's
real code (`Trainer`, `CLIP.embed_pixels`), PyTorch runs transformers' CLIPModel with
torch.optim.AdamW. The methods are the ones the published tables were measured with; each
result also names the BLAS (and its kernel) the process actually loaded."""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from compare_env import blas_libraries, peak_rss
from compare_setup import EOS, TORCH_ADAMW, Result, Settings, synthetic_batch


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

    from mlx_clip.models.clip import CLIP
    from mlx_clip.models.config import CLIPConfig
    from mlx_clip.models.text_length import trim_padding
    from mlx_clip.models.weights import hf_to_mlx, read_weights
    from mlx_clip.train.optim import OptimConfig, make_optimizer
    from mlx_clip.models.trainable import LockConfig, apply_locks
    from mlx_clip.train.step import Trainer

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
        in_flight = []

        def fn():  # as the training loop drives it: dispatch this step, then read the previous one's loss
            in_flight.append(trainer.submit(ids, pixels))
            if len(in_flight) > 1:
                trainer.settle(in_flight.pop(0))
    times = _timed(fn, settings)
    active_before = mx.get_active_memory()
    fn()
    if case != "embed":
        trainer.settle(in_flight.pop())
    leak = mx.get_active_memory() - active_before  # memory kept from one step to the next
    from mlx_clip._blas import describe_blas

    return Result("mlx", case, f"mlx-{device}", settings.batch / statistics.median(times), times,
                  peak_rss(), int(mx.get_peak_memory()), text_length, first_loss,
                  {"blas": describe_blas() if device == "cpu" else "gpu", "mlx_version": mx.__version__,
                   "blas_libraries": blas_libraries(), "active_memory_growth_per_step_bytes": int(leak)})


def run_torch(settings: Settings, case: str, init: Path) -> Result:
    import torch
    import transformers
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
    first_loss, adamw_used = None, None  # no optimizer when embedding
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
                                      lr=1e-5, betas=(0.9, 0.98), eps=1e-6, **TORCH_ADAMW[settings.torch_adamw])
        flags = optimizer.defaults  # what the optimizer was built with, not what was asked
        adamw_used = "fused" if flags.get("fused") else "foreach" if flags.get("foreach") else "default"
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
                  peak_rss(), framework_peak, length, first_loss,
                  {"threads": torch.get_num_threads(), "torch_version": torch.__version__,
                   "adamw": adamw_used,
                   "transformers_version": transformers.__version__, "blas": torch_blas(torch),
                   "cpu_capability": torch.backends.cpu.get_cpu_capability(), "blas_libraries": blas_libraries()})


def torch_blas(torch) -> str:
    """PyTorch's BLAS as its build says (MKL is linked in statically: threadpoolctl cannot see it)."""
    config = torch.__config__.show()
    for line in config.splitlines():
        if "Math Kernel Library Version" in line:
            return "MKL " + line.split("Version", 1)[1].split()[0]
    info = [part.split("=", 1)[1] for part in config.replace(",", " ").split() if part.startswith("BLAS_INFO=")]
    return info[0] if info else "unknown"


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
