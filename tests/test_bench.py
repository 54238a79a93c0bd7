"""bench/mlx_vs_torch.py: the tiny configuration runs end to end (a smoke test: no timing assertions),
its JSON names the machine, BLAS and versions, and repeats are interleaved and summarised."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from compare_env import cpu_info  # noqa: E402
from compare_schedule import interleaved, summarise  # noqa: E402


def test_mlx_vs_torch_tiny_smoke(tmp_path):
    out = tmp_path / "compare.json"
    # On an x86 machine, also check that --isa avx2 reaches both sides' children.
    avx2 = platform.machine() in ("x86_64", "AMD64") and cpu_info()["flags"]["avx2"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mlx_vs_torch.py"), "--config", "tiny", "--batch", "4", "--steps", "1",
         "--warmup", "1", "--repeats", "1", "--json", str(out), "--cache", str(tmp_path / "cache"),
         "--device", "cpu", "--isa", "avx2" if avx2 else "native"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["cases"]) == {"train", "train-lock-text", "embed"}
    assert report["run_order"] == ["0:train:mlx", "0:train:torch", "0:train-lock-text:mlx", "0:train-lock-text:torch",
                                   "0:embed:mlx", "0:embed:torch"]
    for case, entry in report["cases"].items():
        for side in ("mlx", "torch"):
            assert entry[side]["images_per_s"]["median"] > 0, (case, side)
            assert entry[side]["peak_rss_bytes"]["median"] > 0, (case, side)
        assert entry["ratio"] > 0 and entry["paired_ratio"]["median"] > 0
    train = report["cases"]["train"]
    # Same weights and batch on both sides: the first training loss agrees.
    assert abs(train["mlx"]["first_loss"] - train["torch"]["first_loss"]) < 1e-4
    env = report["environment"]
    assert env["cpu"]["model"] and set(env["cpu"]["flags"]) >= {"avx2", "avx512f"}
    assert "openblas_coretype" in env
    assert report["versions"]["mlx"] and report["versions"]["torch"] and report["versions"]["transformers"]
    assert report["blas"]["mlx"] and report["blas"]["torch"]
    if sys.platform.startswith("linux"):  # MLX's BLAS is the OpenBLAS mlx_clip._blas loaded, named with its kernel
        assert "OpenBLAS" in report["blas"]["mlx"] and "kernels" in report["blas"]["mlx"]
        libraries = train["mlx"]["extra"]["blas_libraries"]
        assert any(lib.get("internal_api") == "openblas" and lib.get("architecture") for lib in libraries)
    assert "train" in done.stdout and "ratio" in done.stdout
    if avx2:  # both sides capped: OpenBLAS's Haswell kernels under MLX, PyTorch's ATen on AVX2
        assert report["isa"] == "avx2" and env["blas_environment"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
        assert report["blas"]["torch_cpu_capability"] == "AVX2"
        if sys.platform.startswith("linux"):
            assert "Haswell" in report["blas"]["mlx"]


def test_bench_memory_tiny_smoke_and_a_case_over_the_limit_is_reported_not_run(tmp_path):
    """bench/bench_memory.py: LoRA + checkpointing trains far fewer weights in less memory than full
    fine-tuning; a case over --limit-gib is "did not fit": refused by projection, or its child killed."""
    def bench(*extra):
        out = tmp_path / f"memory{len(list(tmp_path.iterdir()))}.json"
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_memory.py"), "--models", "tiny", "--batch",
                               "4", "--steps", "1", "--json", str(out), *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return {r["mode"]: r for r in json.loads(out.read_text())["results"]}

    cases = bench("--modes", "full", "lora+checkpoint")
    full, lora = cases["full"], cases["lora+checkpoint"]
    assert full["status"] == lora["status"] == "ok"
    assert lora["trainable"] < full["trainable"] / 10 and full["params"] < lora["params"] < 1.05 * full["params"]
    assert lora["mlx_peak_bytes"] < full["mlx_peak_bytes"] and full["images_per_s"] > 0
    refused = bench("--modes", "full", "--limit-gib", "0.01")["full"]  # 3.4M weights x 4 copies > 10 MiB
    assert refused["status"] == "did not fit" and "alone pass the limit" in refused["reason"]
    killed = bench("--modes", "lora", "--limit-gib", "0.05")["lora"]  # Python + MLX alone pass 50 MiB resident
    assert killed["status"] == "did not fit" and "resident memory passed the limit" in killed["reason"]


def test_repeats_alternate_which_framework_goes_first():
    order = interleaved(["train", "embed"], 3)
    assert order == [(0, "train", "mlx"), (0, "train", "torch"), (0, "embed", "mlx"), (0, "embed", "torch"),
                     (1, "train", "torch"), (1, "train", "mlx"), (1, "embed", "torch"), (1, "embed", "mlx"),
                     (2, "train", "mlx"), (2, "train", "torch"), (2, "embed", "mlx"), (2, "embed", "torch")]


def _run(framework, rate, rss, loss=1.0):
    return dict(framework=framework, case="train", device=f"{framework}-cpu", images_per_s=rate, step_seconds=[1.0],
                peak_rss_bytes=rss, peak_framework_bytes=None, text_length=16, first_loss=loss, extra={})


def test_summary_is_the_median_with_its_spread_and_paired_ratios():
    runs = [_run("mlx", 10.0, 5), _run("torch", 5.0, 7), _run("torch", 4.0, 8), _run("mlx", 12.0, 6),
            _run("mlx", 2.0, 4), _run("torch", 1.0, 9)]
    entry = summarise(runs)
    assert entry["mlx"]["images_per_s"] == {"median": 10.0, "min": 2.0, "max": 12.0, "values": [10.0, 12.0, 2.0]}
    assert entry["torch"]["peak_rss_bytes"]["median"] == 8
    assert entry["ratio"] == pytest.approx(10.0 / 4.0)
    # paired in run order: 10/5, 12/4, 2/1
    assert entry["paired_ratio"]["values"] == pytest.approx([2.0, 3.0, 2.0])
    with pytest.raises(ValueError):
        summarise(runs[:3])


def test_cpu_info_reads_model_and_vector_flags():
    info = cpu_info("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f\n")
    assert info["model"] == "Some CPU 9000"
    assert info["flags"]["avx2"] and info["flags"]["avx512f"] and not info["flags"]["amx_tile"]
    assert not cpu_info("model name\t: Old\nflags\t\t: fpu sse avx2\n")["flags"]["avx512f"]


def test_step_variants_bench_runs_each_variant_every_round(tmp_path):
    out = tmp_path / "step.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_step.py"), "--config", "tiny", "--batch", "8",
                           "--rounds", "2", "--warmup", "1", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["variants"]) == {"plain", "row-major"}
    for entry in report["variants"].values():
        assert len(entry["images_per_s"]["values"]) == 2 and entry["cpu_seconds_per_step"]["median"] > 0
    assert report["variants"]["plain"]["speedup_vs_plain"]["values"] == [1.0, 1.0]
    assert "OpenBLAS" in report["blas"] or not sys.platform.startswith("linux")


def test_step_variants_are_built_with_the_layer_and_optimizer_they_name():
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from bench_step import build
    from compare_setup import CONFIGS
    from mlx_clip.models.clip import CLIP
    from mlx_clip.models.config import CLIPConfig
    from mlx_clip.models.fast_ops import Linear
    from mlx_clip.train.optim import GuardedAdamW

    spec = CONFIGS["tiny"]
    config = CLIPConfig.from_dict({"model_type": "clip", "projection_dim": spec["projection_dim"],
                                   "text_config": spec["text"], "vision_config": spec["vision"]})
    weights = list(tree_flatten(CLIP(config).parameters()))
    kinds = {}
    for variant in ("plain", "row-major"):
        trainer = build(variant, config, weights, lock_text=False)
        fc1 = trainer.model.vision_model.encoder.layers[0].mlp.fc1
        kinds[variant] = (type(fc1), {type(o) for o in trainer.optimizer.optimizers})
    assert kinds["plain"] == (nn.Linear, {GuardedAdamW})
    assert kinds["row-major"] == (Linear, {GuardedAdamW})


def test_bench_overhead_tiny_smoke(tmp_path):
    """bench/bench_overhead.py: both sides run the tiny step; the JSON has the ratio and steps/s on top."""
    out = tmp_path / "overhead.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_overhead.py"), "--batch", "4", "--steps", "2",
                           "--warmup", "1", "--repeats", "1", "--json", str(out), "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    steps = report["steps_per_s"]
    assert report["ratio"] == pytest.approx(steps["mlx"]["median"] / steps["torch"]["median"])
    assert report["run_order"] == ["0:mlx", "0:torch"] and report["kernels"]["mlx"]
    # PyTorch at its best on the CPU unless asked otherwise: its fused AdamW, said in the JSON
    assert report["torch_adamw"] == "fused" and report["case"]["torch"]["runs"][0]["extra"]["adamw"] == "fused"
    case = report["case"]
    assert abs(case["mlx"]["first_loss"] - case["torch"]["first_loss"]) < 1e-4  # same model, same batch
