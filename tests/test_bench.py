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
