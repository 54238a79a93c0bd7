"""What the ranks of a data-parallel run exchange: features all-gathered with the gradient on the
local rows only, gradients summed in flat groups, and the global batch's loss.

Why the local rows only: each rank backpropagates its own shard; summing the ranks' gradients
(sum_tree) then gives the gradient of the global batch's loss, as one process with the global
batch would compute it (tests/test_distributed.py checks this against one process).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..models.family import family_of
from ..models.model import normalize
from .loss import LOSSES

ALL_REDUCE_BYTES = 32 * 2**20  # gradients are summed in groups of about this size


def gather_with_local_grad(x: mx.array, group) -> mx.array:
    """all_gather along axis 0 where only this rank's rows carry gradient (see module doc)."""
    rank, rows = group.rank(), x.shape[0]
    everything = mx.stop_gradient(mx.distributed.all_gather(x, group=group))
    return mx.concatenate([everything[:rank * rows], x, everything[(rank + 1) * rows:]], axis=0)


def sum_tree(tree, group, group_bytes: int = ALL_REDUCE_BYTES):
    """all_sum every array of a tree, concatenated into flat groups of about `group_bytes`."""
    flat = tree_flatten(tree)
    if not flat:
        return tree
    out, pending, size = [], [], 0

    def flush():
        nonlocal pending, size
        if not pending:
            return
        if len(pending) == 1:
            key, value = pending[0]
            out.append((key, mx.distributed.all_sum(value, group=group)))
        else:
            summed = mx.distributed.all_sum(mx.concatenate([v.reshape(-1) for _, v in pending]), group=group)
            offsets = np.cumsum([0] + [v.size for _, v in pending])
            out.extend((k, summed[offsets[i]:offsets[i + 1]].reshape(v.shape)) for i, (k, v) in enumerate(pending))
        pending, size = [], 0

    for key, value in flat:
        if pending and (value.dtype != pending[0][1].dtype or size + value.nbytes > group_bytes):
            flush()
        pending.append((key, value))
        size += value.nbytes
    flush()
    return tree_unflatten(out)


def distributed_clip_loss(model, input_ids: mx.array, pixel_values: mx.array, groups: mx.array, valid: mx.array,
                          group) -> mx.array:
    """The global batch's loss (the model family's) from this rank's shard (gradient: see module doc)."""
    images = gather_with_local_grad(normalize(model.encode_image(pixel_values)), group)
    texts = gather_with_local_grad(normalize(model.encode_text(input_ids)), group)
    all_groups = mx.distributed.all_gather(groups, group=group)
    all_valid = mx.distributed.all_gather(valid.astype(mx.uint8), group=group).astype(mx.bool_)
    logits_per_text = model.similarity(texts, images)
    return LOSSES[family_of(model).loss](logits_per_text.T, all_groups, all_valid)
