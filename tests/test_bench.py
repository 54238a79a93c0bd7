"""bench/compare.py's tiny configuration runs end to end (a smoke test: no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_tiny_smoke(tmp_path):
    out = tmp_path / "compare.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--config", "tiny", "--batch", "4", "--steps", "1",
         "--warmup", "1", "--json", str(out), "--cache", str(tmp_path / "cache"), "--device", "cpu"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["cases"]) == {"train", "train-lock-text", "embed"}
    for case, entry in report["cases"].items():
        for key in ("mlx_images_per_s", "torch_images_per_s", "ratio", "mlx_peak_rss_bytes", "torch_peak_rss_bytes"):
            assert entry[key] > 0, (case, key)
    train = report["cases"]["train"]
    # Same weights and batch on both sides: the first training loss agrees.
    assert abs(train["mlx_first_loss"] - train["torch_first_loss"]) < 1e-4
    assert "train" in done.stdout and "ratio" in done.stdout


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
