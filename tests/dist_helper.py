"""One rank of a 2-process test (tests/test_distributed.py): `python dist_helper.py step MODEL OUT`.

Started with MLX_RANK / MLX_HOSTFILE set, as mlx.launch does. `python dist_helper.py step MODEL OUT
lora`: the same with LoRA adapters (rank 4) and gradient checkpointing (`adapt`). `step`: this rank's shard of
two global batches (6 pairs, then 5 with a short shard; rows 1 and 5 show one image, so a
group of positives spans both ranks): the rank-summed gradients of each at
the starting weights, then two DistributedTrainer steps; writes losses, gradients and weights
to OUT/rank{r}.npz.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_clip  # noqa: E402  (first: OpenBLAS under MLX on Linux)
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mlx_clip.train import distributed  # noqa: E402
from mlx_clip.train.optim import OptimConfig, make_optimizer  # noqa: E402

CAPTIONS = ["a red circle", "a blue square", "a red circle", "a green triangle", "a yellow star",
            "a blue circle"]
OPTIM = OptimConfig(lr=1e-3, weight_decay=0.1, warmup=0)
TOTAL_STEPS = 100


GROUPS = np.array([0, 1, 2, 3, 4, 1])  # image groups: rows 1 and 5 show the same image


def batches(model):
    """The two global batches: (input_ids, pixels, image groups)."""
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    return [(ids, pixels, GROUPS), (ids[:5][::-1].copy(), pixels[1:6].copy(), GROUPS[1:6].copy())]


def main():
    mode, model_path, out = sys.argv[1:4]
    dist = distributed.init()
    assert dist.size == 2, dist.size
    model = mlx_clip.load(model_path)
    if sys.argv[4:] == ["lora"]:
        adapt(model)
    trainer = dist.trainer(model, make_optimizer(OPTIM, TOTAL_STEPS), eos_token_id=model.tokenizer.eos_token_id)
    losses, grads = [], {}
    for phase in ("grad", "step"):
        for b, (ids, pixels, groups) in enumerate(batches(model)):
            args = shard(ids, pixels, groups, dist, model.tokenizer.eos_token_id)
            local_ids, local_pixels, local_groups, valid = args
            if phase == "step":
                losses.append(float(trainer.step(local_ids, local_pixels, groups=local_groups, valid=valid)))
                continue
            # gradients at the starting weights, summed over ranks (as the compiled step does)
            _, g = nn.value_and_grad(model, trainer.loss_fn)(model, *trainer.step_inputs(*args))
            grads.update({f"grad{b}.{k}": np.array(v) for k, v in tree_flatten(trainer.reduce_grads(g))})
    flat = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    np.savez(Path(out) / f"rank{dist.rank}.npz", losses=np.array(losses), **flat, **grads)


def adapt(model):
    """LoRA adapters of rank 4 on every block, and checkpointed blocks."""
    from mlx_clip.models.lora import LoraConfig
    from mlx_clip.models.model import set_grad_checkpoint
    from mlx_clip.models.trainable import LockConfig, apply_locks

    apply_locks(model, LockConfig(), LoraConfig(rank=4), seed=0)
    set_grad_checkpoint(model)


def shard(ids, pixels, groups, dist, eos):
    """This rank's rows of a global batch, padded, and the valid mask."""
    start, stop, rows = distributed.shard_bounds(len(ids), dist.rank, dist.size)
    local_ids, local_pixels, local_groups = ids[start:stop], pixels[start:stop], groups[start:stop]
    pad = rows - (stop - start)
    valid = np.arange(rows) < stop - start
    if pad:
        filler = np.zeros((pad, ids.shape[1]), ids.dtype)
        filler[:, 0] = eos
        local_ids = np.concatenate([local_ids, filler])
        local_pixels = np.concatenate([local_pixels, np.zeros((pad, 32, 32, 3), np.float32)])
        local_groups = np.concatenate([local_groups, np.full(pad, -1)])
    return local_ids, local_pixels, local_groups, valid


if __name__ == "__main__":
    main()
