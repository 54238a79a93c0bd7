"""The training step without a host sync: steps dispatched ahead train exactly as steps waited for
one by one, and the NaN guard inside the compiled step never applies a non-finite step (nor any
step after it), so a loss read one step late still stops the run before a spoilt weight exists."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_clip
from mlx_clip.train.epoch import train_epoch
from mlx_clip.train.optim import OptimConfig, make_optimizer
from mlx_clip.train.nan_guard import NonFiniteError
from mlx_clip.train.step import Trainer

CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]


def batches(model, count: int, poisoned: int | None = None) -> list[tuple]:
    ids = np.asarray(model.tokenizer(CAPTIONS))
    rng = np.random.default_rng(0)
    out = []
    for number in range(count):
        pixels = rng.standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
        if number == poisoned:
            pixels[1] = np.nan
        out.append((ids, pixels))
    return out


def trainer_for(tiny_hf, precision: str = "float32") -> Trainer:
    model = mlx_clip.load(tiny_hf)
    return Trainer(model, make_optimizer(OptimConfig(lr=1e-3, warmup=0), total_steps=10), precision)


def snapshot(trainer: Trainer) -> dict:
    """Every weight (float32 master weights too) and every optimizer array, as NumPy."""
    mx.eval(trainer.state)
    flat = {f"w.{k}": v for k, v in tree_flatten(trainer.fp32_parameters())}
    flat.update({f"o.{k}": v for k, v in tree_flatten(trainer.optimizer.state)})
    flat.update({f"m.{k}": v for k, v in tree_flatten(trainer.model.parameters())})
    return {k: np.array(v.astype(mx.float32)) for k, v in flat.items()}


def test_steps_dispatched_ahead_train_exactly_as_steps_waited_for(tiny_hf):
    waited, ahead = trainer_for(tiny_hf), trainer_for(tiny_hf)
    data = batches(waited.model, 3)
    waited_losses = [float(waited.step(ids, pixels)) for ids, pixels in data]
    pending = [ahead.submit(ids, pixels) for ids, pixels in data]  # all three in flight, nothing read
    assert [ahead.settle(p) for p in pending] == waited_losses
    a, b = snapshot(waited), snapshot(ahead)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_non_finite_step_and_every_later_one_are_not_applied(tiny_hf, precision):
    trainer = trainer_for(tiny_hf, precision)
    good, poisoned, after = batches(trainer.model, 3, poisoned=1)
    trainer.step(*good)
    before = snapshot(trainer)
    bad = trainer.submit(*poisoned)
    later = trainer.submit(*after)  # a finite batch, dispatched before the bad step was read
    with pytest.raises(NonFiniteError, match="the loss is nan"):
        trainer.settle(bad)
    with pytest.raises(NonFiniteError, match="an earlier step was not finite: this step was not applied"):
        trainer.settle(later)
    now = snapshot(trainer)
    for name in before:
        assert np.array_equal(before[name], now[name]), name


class ListStream:
    """What train_epoch reads from a TrainStream: items, len() and epoch(n)'s batches."""

    def __init__(self, data):
        self.data, self.items = data, [None] * sum(len(ids) for ids, _ in data)

    def __len__(self):
        return len(self.data)

    def epoch(self, _epoch):
        for ids, pixels in self.data:
            yield {"input_ids": ids, "pixels": pixels, "image_group": np.arange(len(ids)),
                   "record_id": [str(i) for i in range(len(ids))]}


def test_the_loop_reads_losses_a_step_late_and_stops_at_the_first_non_finite_step(tiny_hf):
    trainer = trainer_for(tiny_hf)
    settled = []
    losses, sizes = train_epoch(trainer, ListStream(batches(trainer.model, 3)), 1, 1, progress=False,
                                on_step=lambda: settled.append(1))
    assert len(losses) == 3 == len(settled) and sizes == [4, 4, 4] and all(np.isfinite(losses))
    trainer, settled = trainer_for(tiny_hf), []
    data = batches(trainer.model, 5, poisoned=3)
    trainer.step(*data[0])
    before = snapshot(trainer)
    with pytest.raises(NonFiniteError, match=r"diverged at epoch 2, step 7 \(3 of the epoch\).*the loss is nan"):
        train_epoch(trainer, ListStream(data[1:]), 2, 2, progress=False, on_step=lambda: settled.append(1))
    assert len(settled) == 2  # steps 1 and 2 of the epoch were read; the poisoned third stopped it
    after = snapshot(trainer)
    changed = [name for name in before if not np.array_equal(before[name], after[name])]
    assert changed  # the epoch's two finite steps were applied ...
    with pytest.raises(NonFiniteError, match="not applied"):  # ... and nothing after the non-finite one
        trainer.step(*data[0])
    assert all(np.array_equal(after[name], snapshot(trainer)[name]) for name in after)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_finiteness_sum_sees_one_bad_entry_anywhere_in_a_large_gradient(bad):
    """gradient_sum (the NaN guard's reduction; large CPU gradients go through BLAS) is non-finite
    for one NaN or inf in any row and column of an embedding-sized gradient, and equals the plain
    sum otherwise."""
    from mlx_clip.train.nan_guard import ROWS_BY_BLAS, gradient_sum

    rng = np.random.default_rng(1)
    table = rng.standard_normal((ROWS_BY_BLAS // 32 + 7, 64)).astype(np.float32)
    small = rng.standard_normal((3, 5)).astype(np.float32)
    clean = gradient_sum({"table": mx.array(table), "small": mx.array(small)}).item()
    assert clean == pytest.approx(float(table.sum(dtype=np.float64) + small.sum(dtype=np.float64)), abs=1e-2)
    for row, column in [(0, 0), (table.shape[0] - 1, 63), (1234, 17)]:
        spoilt = table.copy()
        spoilt[row, column] = bad
        assert not np.isfinite(gradient_sum({"table": mx.array(spoilt), "small": mx.array(small)}).item())
    both = table.copy()
    both[5, 5], both[9, 9] = np.inf, -np.inf  # rows summing to +inf and -inf: NaN in the end
    assert not np.isfinite(gradient_sum({"table": mx.array(both)}).item())
