"""CLIP's symmetric contrastive loss; batch entries showing the same image are each other's positives.

Two entries whose images have the same content (equal sha256: two records sharing one image
file, each with its own caption and augmentation) are both right answers: each row's target
mass is spread evenly over the entries of its image group, in both directions. Entries with
equal *captions* need no rule: their text features are identical, and spreading the target
over them gives plain CLIP's loss and gradient exactly.

One function serves one process and data-parallel training (`valid` masks a padded shard).
"""

from __future__ import annotations

import math

import mlx.core as mx

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP / open_clip clamp the log temperature here


def group_targets(groups: mx.array, valid: mx.array | None = None) -> mx.array:
    """(B, B) soft targets: 1/k over the k valid entries in row i's image group (itself included)."""
    same = (groups[:, None] == groups[None, :]).astype(mx.float32)
    if valid is not None:
        v = valid.astype(mx.float32)
        same = same * v[:, None] * v[None, :]
    return same / mx.maximum(same.sum(axis=1, keepdims=True), 1.0)


def contrastive_loss(logits_per_image: mx.array, groups: mx.array | None = None,
                     valid: mx.array | None = None) -> mx.array:
    """Mean over valid rows of image->text and text->image cross-entropy against the group targets.

    `groups` (B,) ints, equal for entries with the same image (None: all different, plain CLIP);
    `valid` (B,) bool, False on padding rows, which then count neither as rows nor as columns.
    The targets are symmetric (groups are cliques), so the same matrix serves both ways.
    """
    logits = logits_per_image.astype(mx.float32)
    targets = group_targets(mx.arange(logits.shape[0]) if groups is None else groups, valid)
    count = logits.shape[0] if valid is None else valid.astype(mx.float32).sum()

    def direction(x: mx.array) -> mx.array:
        if valid is not None:
            x = mx.where(valid[None, :], x, -mx.inf)
        log_p = x - mx.logsumexp(x, axis=1, keepdims=True)
        return -mx.where(targets > 0, targets * log_p, 0.0).sum() / count

    return (direction(logits) + direction(logits.T)) / 2
