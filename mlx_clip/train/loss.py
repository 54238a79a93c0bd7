"""The image-text losses: CLIP's symmetric contrastive loss and SigLIP's sigmoid loss; batch entries
showing the same image or object are each other's positives in both.

Two entries of one group (equal image content, or one object under --group-field: two records
each with its own caption and augmentation) are both right answers: each row's target mass is
spread evenly over its positives, in both directions. `groups` may also carry several relations
as columns, (B, R): entries are then positives when ANY column is equal. The relation is
symmetric, so one row-normalised matrix serves both directions.

Entries with equal captions are not made positives (tests/test_groups.py measures both):
in the softmax loss it would change nothing (their text features are identical, and spreading
the target over them gives plain CLIP's loss and gradient exactly). In SigLIP's sigmoid loss it
would remove a contradiction (the pair (image i, text j), text j equal to text i, has the very
logit asked to say "yes" for (i, i)), but on the shapes set (12 captions, 192 images, batch 32)
it trained no better (mean recall@1 0.36 and zero-shot 0.357 after 8 epochs either way) while
its loss sits on another scale (8.5 against 3.5), so the chance-level check, which assumes one
positive per row, warned on all 8 epochs instead of 2. A caption column (R = 2) is the way in,
once `chance_loss` counts a batch's positives.

Each function serves one process and data-parallel training (`valid` masks a padded shard);
`LOSSES` maps a model family's `loss` (models/family.py) to its function.
"""

from __future__ import annotations

import math

import mlx.core as mx



def positives(groups: mx.array) -> mx.array:
    """(B, B) bool: entries equal in `groups` (B,), or in any column of `groups` (B, R)."""
    if groups.ndim == 1:
        return groups[:, None] == groups[None, :]
    return (groups[:, None, :] == groups[None, :, :]).any(axis=2)


def group_targets(groups: mx.array, valid: mx.array | None = None) -> mx.array:
    """(B, B) soft targets: 1/k over the k valid positives of row i (itself included)."""
    same = positives(groups).astype(mx.float32)
    if valid is not None:
        v = valid.astype(mx.float32)
        same = same * v[:, None] * v[None, :]
    return same / mx.maximum(same.sum(axis=1, keepdims=True), 1.0)


def contrastive_loss(logits_per_image: mx.array, groups: mx.array | None = None,
                     valid: mx.array | None = None) -> mx.array:
    """Mean over valid rows of image->text and text->image cross-entropy against the group targets.

    `groups` (B,) or (B, R) ints, equal for positives (see `positives`; None: all different, plain CLIP);
    `valid` (B,) bool, False on padding rows, which then count neither as rows nor as columns.
    The positives are symmetric, so the same row-normalised matrix serves both ways.
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


def sigmoid_loss(logits_per_image: mx.array, groups: mx.array | None = None,
                 valid: mx.array | None = None) -> mx.array:
    """SigLIP's loss: each (image, text) pair is its own yes/no question, yes when the two show the
    same group or caption (see `positives`); -sum of log sigmoid(+-logit) over valid pairs, per valid row (transformers'
    SiglipModel loss when every entry is its own group). Symmetric, so one direction serves both.
    """
    logits = logits_per_image.astype(mx.float32)
    groups = mx.arange(logits.shape[0]) if groups is None else groups
    signs = 2 * positives(groups).astype(mx.float32) - 1
    log_likelihood = -mx.logaddexp(mx.zeros_like(logits), -signs * logits)  # log sigmoid(sign * logit)
    if valid is None:
        return -log_likelihood.sum() / logits.shape[0]
    v = valid.astype(mx.float32)
    return -(log_likelihood * v[:, None] * v[None, :]).sum() / v.sum()


LOSSES = {"softmax": contrastive_loss, "sigmoid": sigmoid_loss}


def chance_loss(kind: str, batch_size: int) -> float:
    """The loss of scores that tell no pair from another, at the best constant: ln B for the
    contrastive loss; for the sigmoid loss one logit for every pair, sigmoid = 1/B, giving
    ln B - (B - 1) ln(1 - 1/B) (about ln B + 1)."""
    if kind == "sigmoid" and batch_size > 1:
        return math.log(batch_size) - (batch_size - 1) * math.log1p(-1 / batch_size)
    return math.log(batch_size)
