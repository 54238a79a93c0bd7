#!/usr/bin/env python
"""Where MLX's training step spends its time on a GPU, against PyTorch, phase by phase and
under variants of the model code (which CPU-only tricks to keep on a GPU).

  python bench/gpu_probe.py --json out.json            # ViT-B/32: fp32 batch 32, bf16 batch 128

Phases: forward (loss only), forward + backward, the full step (AdamW); the same for
PyTorch (transformers CLIPModel, torch.optim.AdamW, autocast for bfloat16). Variants of the
MLX model: as shipped, and `quick_gelu` with MLX's own sigmoid inside its custom VJP instead
of the libm-free polynomial (a CPU trick). `step_device_inputs` passes the batch as MLX arrays
already made, `step` as the NumPy arrays the data stream yields; `update_ms` and
`gradient_sum_ms` time AdamW's update and the NaN guard's gradient sum alone, on fixed gradients
(what the step adds to forward + backward). Same weights, ids and pixels as bench/mlx_vs_torch.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_setup as C  # noqa: E402  (configs, batches, initial weights as bench/mlx_vs_torch.py uses them)


def timed(fn, steps: int, warmup: int = 2) -> float:
    return C.median_seconds(fn, steps, warmup)


def mlx_phases(settings: C.Settings, init: Path, variant: str) -> dict:
    import mlx_clip  # noqa: F401
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_clip.models.clip import CLIP
    from mlx_clip.models.config import CLIPConfig
    from mlx_clip.models.weights import hf_to_mlx, read_weights
    from mlx_clip.train.optim import OptimConfig, make_optimizer
    from mlx_clip.models.text_length import trim_padding
    from mlx_clip.train.nan_guard import gradient_sum
    from mlx_clip.train.step import Trainer, clip_loss

    from mlx_clip.models import fast_ops

    saved_sigmoid = fast_ops._sigmoid
    if variant == "native-sigmoid":  # quick_gelu's custom VJP kept, its sigmoid MLX's own kernel
        fast_ops._sigmoid = mx.sigmoid
    try:
        mx.set_default_device(mx.gpu if mx.is_available(mx.gpu) else mx.cpu)
        model = CLIP(CLIPConfig.from_file(init / "config.json"))
        model.load_weights(list(hf_to_mlx(read_weights(init)[0]).items()))
        ids_np, pixels_np = C.synthetic_batch(settings, model.config.vision.image_size)
        ids = mx.array(trim_padding(ids_np, C.EOS))
        pixels = mx.array(pixels_np)
        groups = mx.arange(settings.batch)
        optimizer = make_optimizer(OptimConfig(lr=1e-5, weight_decay=0.1, warmup=0), total_steps=1000)
        trainer = Trainer(model, optimizer, settings.precision, eos_token_id=C.EOS)
        mx.eval(model.parameters())
        dtype = trainer.compute_dtype
        px = pixels.astype(dtype)
        fwd = mx.compile(lambda i, p: clip_loss(model, i, p, groups), inputs=model.state)
        grad_fn = nn.value_and_grad(model, lambda m, i, p: clip_loss(m, i, p, groups))

        def loss_and_grad_sum(i, p):  # every gradient computed; one reduction returned
            loss, grads = grad_fn(model, i, p)
            return loss, gradient_sum(grads)

        fwd_bwd = mx.compile(loss_and_grad_sum, inputs=model.state, outputs=model.state)
        # the rest of the step alone, on fixed gradients: AdamW's update, and the NaN guard's sum
        _, grads = grad_fn(model, ids, px)
        mx.eval(grads)
        update = mx.compile(lambda g: optimizer.update(model, g), inputs=trainer.state, outputs=trainer.state)
        summed = mx.compile(gradient_sum)
        mx.reset_peak_memory()
        out = {"forward": settings.batch / timed(lambda: mx.eval(fwd(ids, px)), settings.steps),
               "forward_backward": settings.batch / timed(lambda: mx.eval(fwd_bwd(ids, px)), settings.steps),
               "step_device_inputs": settings.batch / timed(lambda: trainer.step(ids, pixels), settings.steps),
               "step": settings.batch / timed(lambda: trainer.step(ids_np, pixels_np), settings.steps),
               "update_ms": 1e3 * timed(lambda: mx.eval(update(grads), trainer.state), settings.steps),
               "gradient_sum_ms": 1e3 * timed(lambda: mx.eval(summed(grads)), settings.steps)}
        del grads
        out["peak_gb"] = mx.get_peak_memory() / 1e9
        del trainer, model, optimizer
        mx.clear_cache()
        return out
    finally:
        fast_ops._sigmoid = saved_sigmoid


def torch_phases(settings: C.Settings, init: Path) -> dict:
    import torch
    from transformers import CLIPModel

    dtype = torch.bfloat16 if settings.precision == "bfloat16" else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = CLIPModel.from_pretrained(init).to(device).train()
    ids_np, pixels_np = C.synthetic_batch(settings, model.config.vision_config.image_size)
    length = int((ids_np == C.EOS).argmax(axis=1).max()) + 1
    ids = torch.tensor(ids_np[:, :length], dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    pixels = torch.tensor(pixels_np, device=device).permute(0, 3, 1, 2).contiguous()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)

    def loss():
        with autocast:
            return model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss

    def forward():
        with torch.no_grad():
            loss()
        sync()

    def forward_backward():
        model.zero_grad(set_to_none=True)
        loss().backward()
        sync()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
        sync()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = {"forward": settings.batch / timed(forward, settings.steps),
           "forward_backward": settings.batch / timed(forward_backward, settings.steps),
           "step": settings.batch / timed(step, settings.steps),
           "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else 0.0}
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="b32", choices=sorted(C.CONFIGS))
    parser.add_argument("--runs", default="float32:32,bfloat16:128",
                        help="precision:batch pairs, comma-separated")
    parser.add_argument("--variants", default="shipped,native-sigmoid")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import mlx_clip  # noqa: F401  (first: OpenBLAS under MLX on a Linux CPU)
    import mlx.core as mx
    import torch

    results = {"mlx_version": mx.__version__, "torch_version": torch.__version__,
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)", "config": args.config, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        for spec in args.runs.split(","):
            precision, batch = spec.split(":")
            settings = C.Settings(config=args.config, batch=int(batch), precision=precision, steps=args.steps)
            init = C.initial_weights_path(settings, Path(folder))
            row = {"precision": precision, "batch": int(batch), "torch": torch_phases(settings, init)}
            print(f"{precision} batch {batch} torch: {row['torch']}", flush=True)
            for variant in args.variants.split(","):
                row[f"mlx-{variant}"] = mlx_phases(settings, init, variant)
                print(f"{precision} batch {batch} mlx-{variant}: {row[f'mlx-{variant}']}", flush=True)
            results["runs"].append(row)
    for row in results["runs"]:
        print(f"\n{args.config} {row['precision']} batch {row['batch']}: images/s (forward / fwd+bwd / step on device inputs / step), peak GB")
        for name, r in row.items():
            if isinstance(r, dict):
                extra = (f"   update {r['update_ms']:.1f} ms, gradient sum {r['gradient_sum_ms']:.1f} ms"
                         if "update_ms" in r else "")
                print(f"  {name:22s} {r['forward']:9.0f} {r['forward_backward']:9.0f} "
                      f"{r.get('step_device_inputs', float('nan')):9.0f} {r['step']:9.0f}   {r['peak_gb']:.1f}{extra}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
