"""CLIP's symmetric contrastive loss, with equal captions in a batch counted as positives."""

from __future__ import annotations

import math

import mlx.core as mx

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP / open_clip clamp the log temperature here


def caption_targets(input_ids: mx.array) -> mx.array:
    """(B, B) soft targets: 1/k over the k batch entries whose tokens equal row i's (itself included)."""
    same = mx.all(input_ids[:, None, :] == input_ids[None, :, :], axis=-1).astype(mx.float32)
    return same / same.sum(axis=1, keepdims=True)


def contrastive_loss(logits_per_image: mx.array, input_ids: mx.array) -> mx.array:
    """Mean of image->text and text->image cross-entropy against the soft caption targets.

    The targets are symmetric (equal captions form cliques), so the same matrix serves both ways.
    """
    logits = logits_per_image.astype(mx.float32)
    targets = caption_targets(input_ids)
    image_to_text = -(targets * (logits - mx.logsumexp(logits, axis=1, keepdims=True))).sum(axis=1).mean()
    text_to_image = -(targets * (logits.T - mx.logsumexp(logits.T, axis=1, keepdims=True))).sum(axis=1).mean()
    return (image_to_text + text_to_image) / 2
