#!/usr/bin/env python
"""Where the overhead case's step goes, phase by phase, on both sides (bench/bench_overhead.py's
tiny CLIP, batch 32, float32, the same initial weights).

  python bench/overhead_phases.py --json bench/results/overhead-phases-2core.json

MLX: each phase is its own compiled function over the model's state, timed with mx.eval +
time.perf_counter (median of `--steps` runs after `--warmup`): batch upload, forward (the loss),
forward + backward (the gradients), the finiteness sum over every gradient, the AdamW update with
the NaN guard's `where`s, and the whole step as the training loop drives it; then the token
embedding alone (its dense gradient, its share of the sum and of the update). PyTorch: the same
phases timed with perf_counter around forward, backward (zero_grad included) and
`optimizer.step()`, the sum it does not do (for comparison), and torch.profiler's top operators
of whole steps. Each side runs in its own process, one after the other.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_env import describe_machine, environment, save_report  # noqa: E402
from compare_setup import EOS, Settings, initial_weights_path, median_seconds, synthetic_batch  # noqa: E402

MIN_OF_RUNS = bool(os.environ.get("MIN_OF_RUNS"))


def _median_ms(fn, steps: int, warmup: int) -> float:
    """Median milliseconds of `fn` (the fastest run when MIN_OF_RUNS is set)."""
    return 1000 * median_seconds(fn, steps, warmup, fastest=MIN_OF_RUNS)


def mlx_phases(settings: Settings, init: Path) -> dict:
    import mlx_clip  # noqa: F401  (OpenBLAS under MLX first)
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_clip._blas import describe_blas
    from mlx_clip.models.clip import CLIP
    from mlx_clip.models.config import CLIPConfig
    from mlx_clip.models.text_length import trim_padding
    from mlx_clip.models.weights import hf_to_mlx, read_weights
    from mlx_clip.train.optim import GuardedAdamW, OptimConfig, make_optimizer
    from mlx_clip.train.nan_guard import gradient_sum
    from mlx_clip.models.trainable import LockConfig, apply_locks
    from mlx_clip.train.step import Trainer, clip_loss

    mx.set_default_device(mx.cpu)
    steps, warmup = settings.steps, settings.warmup
    config = CLIPConfig.from_file(init / "config.json")
    model = CLIP(config)
    model.load_weights(list(hf_to_mlx(read_weights(init)[0]).items()))
    apply_locks(model, LockConfig())
    ids_np, pixels_np = synthetic_batch(settings, config.vision.image_size)
    optimizer = make_optimizer(OptimConfig(lr=1e-5, weight_decay=0.1, warmup=0), total_steps=1000)
    trainer = Trainer(model, optimizer, "float32", eos_token_id=EOS)
    inputs = trainer.step_inputs(ids_np, pixels_np)
    mx.eval(inputs, model.parameters())
    out: dict = {}

    def upload():
        mx.eval(trainer.step_inputs(ids_np, pixels_np))

    out["upload"] = _median_ms(upload, steps, warmup)
    state = [model.state]
    forward = mx.compile(lambda *a: clip_loss(model, *a), inputs=state, outputs=state)
    out["forward"] = _median_ms(lambda: mx.eval(forward(*inputs)), steps, warmup)
    loss_and_grad = nn.value_and_grad(model, clip_loss)
    gradients = mx.compile(lambda *a: loss_and_grad(model, *a), inputs=state, outputs=state)
    out["forward_backward"] = _median_ms(lambda: mx.eval(gradients(*inputs)), steps, warmup)
    out["backward"] = out["forward_backward"] - out["forward"]
    loss, grads = gradients(*inputs)
    mx.eval(loss, grads)
    grad_sum = mx.compile(gradient_sum)
    out["finite_sum"] = _median_ms(lambda: mx.eval(grad_sum(grads)), steps, warmup)
    update = mx.compile(trainer._update_fp32, inputs=trainer.state, outputs=trainer.state)
    out["sum_and_update"] = _median_ms(lambda: mx.eval(update(loss, grads), trainer.state), steps, warmup)
    out["adamw_update"] = out["sum_and_update"] - out["finite_sum"]
    in_flight = []

    def loop_step():
        in_flight.append(trainer.submit(ids_np, pixels_np))
        if len(in_flight) > 1:
            trainer.settle(in_flight.pop(0))

    out["whole_step_as_the_loop_runs_it"] = _median_ms(loop_step, steps, warmup)
    trainer.settle(in_flight.pop())
    out["whole_step_waited"] = _median_ms(lambda: trainer.step(ids_np, pixels_np), steps, warmup)
    out["sum_of_phases"] = out["upload"] + out["forward_backward"] + out["sum_and_update"]

    # The token embedding alone (49408 x 64 of the model's ~3.4M parameters).
    table = model.text_model.embeddings.token_embedding.weight
    ids = inputs[0]
    emb: dict = {"shape": list(table.shape), "share_of_parameters":
                 table.size / sum(v.size for _, v in tree_flatten(model.parameters()))}
    take_grad = mx.compile(mx.grad(lambda w: (w[ids] * 1.0).sum()))
    emb["dense_gradient_scatter"] = _median_ms(lambda: mx.eval(take_grad(table)), steps, warmup)
    g = grads["text_model"]["embeddings"]["token_embedding"]["weight"]
    emb["finite_sum"] = _median_ms(lambda: mx.eval(mx.compile(lambda x: x.sum())(g)), steps, warmup)
    alone = GuardedAdamW(learning_rate=1e-5, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.0)
    alone.init({"t": table})
    alone_state, keep = [alone.state], mx.array(True)

    def guarded_update(weight, gradient):
        alone.keep = keep
        new = alone.apply_gradients({"t": gradient}, {"t": weight})["t"]
        alone.keep, alone.guarded = None, {}
        return new

    guarded_c = mx.compile(guarded_update, inputs=alone_state, outputs=alone_state)
    emb["adamw_update_guarded"] = _median_ms(lambda: mx.eval(guarded_c(table, g), alone_state), steps, warmup)
    big = np.ones(table.shape, np.float32)
    emb["copy_one_table_numpy_ms"] = _median_ms(lambda: big.copy(), steps, warmup)
    out["token_embedding"] = emb
    out["blas"] = describe_blas()
    out["mlx_version"] = mx.__version__
    out["text_length"] = int(trim_padding(ids_np, EOS).shape[1])
    return out


def torch_phases(settings: Settings, init: Path) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import CLIPModel

    steps, warmup = settings.steps, settings.warmup
    model = CLIPModel.from_pretrained(init).train()
    ids_np, pixels_np = synthetic_batch(settings, model.config.vision_config.image_size)
    length = int((ids_np == EOS).argmax(axis=1).max()) + 1

    def upload():
        ids = torch.tensor(ids_np[:, :length], dtype=torch.long)
        return ids, torch.ones_like(ids), torch.tensor(pixels_np).permute(0, 3, 1, 2).contiguous()

    ids, mask, pixels = upload()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = (name.endswith(("bias", "logit_scale", "class_embedding")) or "norm" in name
                or "layrnorm" in name or ("embedding" in name and not name.endswith("patch_embedding.weight")))
        (no_decay if skip else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                   {"params": decay, "weight_decay": 0.1}], lr=1e-5, betas=(0.9, 0.98), eps=1e-6)

    def forward():
        return model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss

    def step():
        loss = forward()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=4.6052)
        return loss

    out: dict = {"upload": _median_ms(upload, steps, warmup)}
    out["forward"] = _median_ms(forward, steps, warmup)

    def forward_backward():
        loss = forward()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    out["forward_backward"] = _median_ms(forward_backward, steps, warmup)
    out["backward"] = out["forward_backward"] - out["forward"]
    params = [p for p in model.parameters()]

    def finite_sum():  # what MLX's NaN guard adds; PyTorch's loop does not do it
        return float(sum(p.grad.sum() for p in params))

    out["finite_sum_not_in_torch_step"] = _median_ms(finite_sum, steps, warmup)
    out["adamw_update"] = _median_ms(optimizer.step, steps, warmup)
    out["whole_step"] = _median_ms(step, steps, warmup)
    out["sum_of_phases"] = out["upload"] + out["forward_backward"] + out["adamw_update"]
    table = model.text_model.embeddings.token_embedding.weight
    out["token_embedding"] = {"gradient_layout": "sparse" if table.grad.is_sparse else "dense",
                              "optimizer_foreach": optimizer.defaults.get("foreach"),
                              "optimizer_fused": optimizer.defaults.get("fused")}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    rows = []
    for event in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:25]:
        rows.append({"op": event.key, "calls_per_step": event.count / 10,
                     "self_ms_per_step": event.self_cpu_time_total / 1000 / 10})
    out["profiler_top_ops"] = rows
    out["threads"] = torch.get_num_threads()
    out["torch_version"] = torch.__version__
    return out


def _child(side: str, settings: Settings, init: str, queue) -> None:
    try:
        queue.put((mlx_phases if side == "mlx" else torch_phases)(settings, Path(init)))
    except Exception as err:  # reported by the parent
        import traceback

        queue.put({"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})


def run_side(side: str, settings: Settings, init: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(side, settings, str(init), queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"{side} failed: {result['error']}\n{result['traceback']}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed runs per phase (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    parser.add_argument("--sides", default="mlx,torch", help="which sides, comma-separated (default both)")
    parser.add_argument("--label", default="", help="a note stored in the JSON")
    parser.add_argument("--fastest", action="store_true", help="report each phase's fastest run, not its median")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mlx-clip-bench"), help="initial weights")
    args = parser.parse_args(argv)
    if args.fastest:
        os.environ["MIN_OF_RUNS"] = "1"  # the children (spawned) read it
    settings = Settings("tiny", 32, "float32", args.steps, args.warmup, device="cpu")
    args.cache.mkdir(parents=True, exist_ok=True)
    init = initial_weights_path(settings, args.cache)
    env = environment()
    print(describe_machine(env))
    report = {"label": args.label, "statistic": "fastest run" if args.fastest else "median",
              "environment": env, "load_average_before": os.getloadavg()}
    for side in args.sides.split(","):
        report[side] = run_side(side, settings, init)
        flat = {k: v for k, v in report[side].items() if isinstance(v, float)}
        print(side, " ".join(f"{k} {v:.2f}" for k, v in flat.items()), "ms")
        if "token_embedding" in report[side]:
            print("  token embedding:", report[side]["token_embedding"])
    report["load_average_after"] = os.getloadavg()
    save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
