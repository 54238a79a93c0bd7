"""Data-parallel training on mx.distributed: 2 ranks on 127.0.0.1 (ring backend) train like 1.

Ranks are started the way mlx.launch starts them (MLX_RANK + MLX_HOSTFILE, a JSON list of
each rank's "ip:port"), so the test can kill one of them.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlx_clip
from mlx.utils import tree_flatten
from mlx_clip.train.optim import make_optimizer
from mlx_clip.train.step import Trainer, clip_loss

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
TIMING = ("seconds", "train_images_per_s", "eval_seconds")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_ranks(args, tmp_path, n=2, rank_args=None):
    """Start n ranks of `python ARGS` as mlx.launch --backend ring would on one machine;
    rank_args {rank: ARGS} starts that rank with other arguments."""
    hostfile = tmp_path / f"hosts-{time.monotonic_ns()}.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(n)]))
    procs = []
    for rank in range(n):
        env = dict(os.environ, MLX_RANK=str(rank), MLX_HOSTFILE=str(hostfile), OPENBLAS_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, *(rank_args or {}).get(rank, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs, timeout=240):
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append((p.returncode, stdout, stderr))
    return out


def two_ranks_step_like_one_process(model_path, tmp_path, *, lora=False, same_weights):
    """Two ranks (dist_helper.py) against one process with the global batch: each rank's gradients
    summed over ranks equal the one process's (Adam's update hides gradient scale errors; this does
    not), the losses of two steps are equal, the weights after them pass `same_weights(name, rank's,
    one process's, start)`, and the ranks stay in lockstep, bitwise. `lora`: LoRA adapters and
    gradient checkpointing (dist_helper.adapt) on both sides."""
    import dist_helper

    results = finish(start_ranks([str(HERE / "dist_helper.py"), "step", str(model_path), str(tmp_path)]
                                 + (["lora"] if lora else []), tmp_path))
    for rc, _, stderr in results:
        assert rc == 0, stderr
    model = mlx_clip.load(model_path)
    if lora:
        dist_helper.adapt(model)
        assert any("lora_b" in name for name in np.load(tmp_path / "rank0.npz").files)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for b, (ids, pixels, groups) in enumerate(dist_helper.batches(model)):
        _, grads = nn.value_and_grad(model, clip_loss)(model, mx.array(ids), mx.array(pixels), mx.array(groups))
        for name, value in tree_flatten(grads):
            for got in ranks:
                np.testing.assert_allclose(got[f"grad{b}.{name}"], np.array(value), rtol=1e-4, atol=1e-6,
                                           err_msg=name)
    start = {name: np.array(value) for name, value in tree_flatten(model.parameters())}
    trainer = Trainer(model, make_optimizer(dist_helper.OPTIM, dist_helper.TOTAL_STEPS),
                      eos_token_id=model.tokenizer.eos_token_id)
    losses = [float(trainer.step(ids, pixels, groups=groups)) for ids, pixels, groups in dist_helper.batches(model)]
    for got in ranks:
        np.testing.assert_allclose(got["losses"], losses, rtol=0, atol=1e-5)
        for name, value in tree_flatten(model.parameters()):
            same_weights(name, got[name], np.array(value), start[name])
    for name in ranks[0].files:  # the ranks stay in lockstep: bitwise the same weights
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_two_ranks_step_equals_one_process_with_the_global_batch(tiny_hf, tmp_path, mode):
    """CLIP, fully and with LoRA: every weight after two steps equal to 5e-5 (SigLIP's test, in
    test_siglip_train.py, bounds its key biases instead)."""

    def same_weights(name, got, want, _start):
        # lr is 1e-3, so a wrong update is off by ~1e-3; half-batch GEMMs sum in another order,
        # and Adam turns that noise on a near-zero gradient into up to ~2e-5 after its steps
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-5, err_msg=name)

    two_ranks_step_like_one_process(tiny_hf, tmp_path, lora=mode == "lora", same_weights=same_weights)


def _common(tiny_hf, shapes_manifest, runs):
    # 144 train records, --batch-size 20: 8 steps, the last one short (4) -> padded shards
    return ["finetune.py", "--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(runs),
            "--caption", "a {colour} {shape}", "--caption", "{shape}, {colour}", "--label-field", "label",
            "--batch-size", "20", "--lr", "1e-3", "--rotate", "10", "--no-progress", "--seed", "3",
            "--val-fraction", "0.25"]


def _files(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def test_two_rank_run_writes_what_a_one_rank_run_writes(tiny_hf, shapes_manifest, tmp_path):
    args = _common(tiny_hf, shapes_manifest, tmp_path) + ["--epochs", "2"]
    single = subprocess.run([sys.executable, *args, "--name", "one"], cwd=ROOT, capture_output=True, text=True,
                            timeout=240, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert single.returncode == 0, single.stderr
    (rc0, out0, err0), (rc1, out1, err1) = finish(start_ranks(args + ["--name", "two"], tmp_path))
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert "global batch" in out0 and out1 == ""  # only rank 0 prints
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    np.testing.assert_allclose(two["step_losses"], one["step_losses"], rtol=1e-4, atol=1e-4)
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in a:
            if isinstance(a[key], str):  # a note (e.g. i2i_note: no image has another of its group)
                assert b[key] == a[key], key
            elif key not in TIMING:
                np.testing.assert_allclose(b[key] if b[key] is not None else np.nan,
                                           a[key] if a[key] is not None else np.nan, rtol=1e-3, atol=1e-3,
                                           err_msg=key)
    w1 = mx.load(str(tmp_path / "one" / "checkpoints/epoch-0002/weights.safetensors"))
    w2 = mx.load(str(tmp_path / "two" / "checkpoints/epoch-0002/weights.safetensors"))
    for name in w1:
        np.testing.assert_allclose(np.array(w2[name]), np.array(w1[name]), rtol=0, atol=1e-4, err_msg=name)


def test_killed_rank_stops_the_other_and_resume_continues(tiny_hf, shapes_manifest, tmp_path):
    args = _common(tiny_hf, shapes_manifest, tmp_path) + ["--epochs", "3", "--name", "cut"]
    # rank 1 SIGKILLs itself right after epoch 1 (rank 0 writes that epoch's checkpoint)
    killed = [str(HERE / "run_with_kill.py"), "epoch:1", *args[1:]]  # finetune.py's flags
    procs = start_ranks(args, tmp_path, rank_args={1: killed})
    started = time.monotonic()
    (rc0, out0, err0), (rc1, _, _) = finish(procs, timeout=120)
    assert rc1 == -signal.SIGKILL
    assert rc0 == 2, err0
    lines = [line for line in err0.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "lost the other ranks" in lines[0] and "--resume" in lines[0], err0
    assert time.monotonic() - started < 120
    checkpoints = tmp_path / "cut" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "epoch-0001"
    assert not list(checkpoints.glob(".tmp-*"))

    (rc0, out0, err0), (rc1, _, err1) = finish(start_ranks(
        ["finetune.py", "--runs-dir", str(tmp_path), "--name", "cut", "--resume", "--no-progress"], tmp_path))
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert "resuming" in out0 and "from epoch-0001" in out0
    metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2, 3]
    assert len(metrics["step_losses"]) == 3 * 8

    # ... and ends where an uninterrupted 2-rank run ends
    args[args.index("cut")] = "full"
    (rc0, _, err0), (rc1, _, err1) = finish(start_ranks(args, tmp_path))
    assert rc0 == 0 and rc1 == 0, err0 + err1
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    np.testing.assert_allclose(metrics["step_losses"], full["step_losses"], rtol=0, atol=1e-6)
    for a, b in zip(metrics["history"], full["history"], strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}


def test_masked_loss_is_the_loss_of_the_valid_rows():
    from mlx_clip.train.loss import contrastive_loss

    rng = np.random.default_rng(0)
    logits = mx.array(rng.standard_normal((6, 6)).astype(np.float32) * 3)
    groups = mx.array([0, 1, 0, 3, 4, 0])  # rows 0, 2 and 5 show one image
    full = float(contrastive_loss(logits, groups))
    assert abs(float(contrastive_loss(logits, groups, mx.ones(6, dtype=mx.bool_))) - full) < 1e-6
    keep = np.array([True, True, False, True, True, False])  # padding rows 2 and 5 (same image as row 0)
    idx = mx.array(np.flatnonzero(keep))
    sub = float(contrastive_loss(logits[idx][:, idx], groups[idx]))
    assert abs(sub - full) > 0.1  # the padding rows would change the loss if they counted
    assert abs(float(contrastive_loss(logits, groups, mx.array(keep))) - sub) < 1e-6
    grad = mx.grad(lambda x: contrastive_loss(x, groups, mx.array(keep)))(logits)
    assert np.all(np.isfinite(np.array(grad))) and not np.array(grad)[2].any() and not np.array(grad)[:, 5].any()


def test_shard_bounds_cover_the_batch_once():
    from mlx_clip.train.distributed import shard_bounds

    for size in (1, 2, 3, 4):
        for batch in range(1, 11):
            parts = [shard_bounds(batch, r, size) for r in range(size)]
            assert [i for start, stop, _ in parts for i in range(start, stop)] == list(range(batch))
            assert len({rows for _, _, rows in parts}) == 1


def test_global_batch_must_split_evenly():
    import pytest

    from mlx_clip.errors import InputError
    from mlx_clip.train.distributed import Dist

    Dist(rank=0, size=2).check_batch_size(20)
    Dist().check_batch_size(5)
    with pytest.raises(InputError, match="--batch-size 5 is the global batch .* use 4 or 6"):
        Dist(rank=0, size=2).check_batch_size(5)


def test_a_global_batch_that_does_not_split_stops_before_the_data_step(tmp_path):
    """prepare() checks it beside the settings, before any manifest is read or fetched."""
    import pytest

    from mlx_clip.errors import InputError
    from mlx_clip.run.prepare import prepare
    from mlx_clip.settings import FinetuneConfig
    from mlx_clip.train.distributed import Dist

    config = FinetuneConfig(model=str(tmp_path / "no-model"), manifest=str(tmp_path / "missing.jsonl"), batch_size=5)
    with pytest.raises(InputError, match="--batch-size 5 is the global batch"):
        prepare(config, say=lambda *_: None, dist=Dist(rank=0, size=2))


def test_watchdog_ends_a_wait_that_outlasts_its_timeout_and_names_lost_peers():
    import pytest

    from mlx_clip.train.distributed import PeerLostError, Watchdog

    exits = []
    watchdog = Watchdog(1, 1.0, exit=exits.append)
    with watchdog.waiting("a training step"):
        time.sleep(0.2)
    assert exits == []
    with watchdog.waiting("a training step"):
        time.sleep(3.0)
    assert exits == [3]
    with pytest.raises(PeerLostError, match="rank 1: lost the other ranks during evaluation"):
        with watchdog.waiting("evaluation"):
            raise RuntimeError("[ring] connection to a peer was lost")


def test_rank_shards_of_each_global_batch_make_up_the_single_process_batch(tiny_hf, shapes_manifest):
    from mlx_clip.settings import AugmentConfig, FinetuneConfig, SampleConfig
    from mlx_clip.run.prepare import prepare
    from mlx_clip.train.distributed import Dist, ShardedStream

    config = FinetuneConfig(model=str(tiny_hf), manifest=str(shapes_manifest), batch_size=20,
                            sample=SampleConfig(seed=3), captions=["a {colour} {shape}", "{shape}, {colour}"],
                            augment=AugmentConfig(rotate=10), val_fraction=0.25)
    prepared = prepare(config, say=lambda *_: None)
    single = list(prepared.train_stream(prepared.model).epoch(2))
    shards = [list(ShardedStream(prepared.train_stream(prepared.model), Dist(rank=r, size=2)).epoch(2)) for r in (0, 1)]
    assert len(single) == len(shards[0]) == len(shards[1]) == 8  # 144 records: 7 x 20 + 4
    for whole, *parts in zip(single, *shards):
        assert [p["global_size"] for p in parts] == [len(whole["record_id"])] * 2
        assert sum((p["record_id"] for p in parts), []) == whole["record_id"]
        for key in ("pixels", "input_ids", "image_group"):
            np.testing.assert_array_equal(np.concatenate([p[key][p["valid"]] for p in parts]), whole[key])


def _path_field_args(tiny_hf, shapes_manifest, tmp_path, field="image_path"):
    """Records naming local files (--path-field): the run fetches (copies/checks) them first."""
    records = [json.loads(line) for line in shapes_manifest.read_text().splitlines()]
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps({**r, "image_path": str(shapes_manifest.parent / r["image_path"])}) + "\n"
                            for r in records))
    args = _common(tiny_hf, shapes_manifest, tmp_path)
    at = args.index("--manifest")
    args[at:at + 2] = ["--data", str(data), "--path-field", field, "--out", str(tmp_path / "fetched")]
    return args + ["--epochs", "1", "--name", "paths"]


def test_two_ranks_on_path_field_records_fetch_once_and_train(tiny_hf, shapes_manifest, tmp_path):
    """Only the host's first rank fetches (two fetches into one folder collide on its lock); the
    other waits and reads the same manifest."""
    (rc0, out0, err0), (rc1, out1, err1) = finish(start_ranks(_path_field_args(tiny_hf, shapes_manifest, tmp_path),
                                                              tmp_path))
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert "another fetch" not in err0 + err1 and "global batch" in out0
    assert (tmp_path / "fetched" / "manifest.jsonl").is_file()
    assert [h["epoch"] for h in json.loads((tmp_path / "paths" / "metrics.json").read_text())["history"]] == [0, 1]


def test_a_failed_fetch_stops_every_rank_with_one_line(tiny_hf, shapes_manifest, tmp_path):
    args = _path_field_args(tiny_hf, shapes_manifest, tmp_path, field="no_such_field")
    started = time.monotonic()
    (rc0, _, err0), (rc1, _, err1) = finish(start_ranks(args, tmp_path), timeout=120)
    assert rc0 == 2 and rc1 == 2, err0 + err1
    lines = [line for line in err0.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: rank 0: ") and "no_such_field" in lines[0], err0
    assert err1.strip() == "" and time.monotonic() - started < 120
