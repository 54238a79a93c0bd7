"""How many token positions a batch of CLIP texts needs: padding after the batch's last
end-of-text token is dropped, rounded up to a multiple of 8.

Exact for CLIP (the family decides where it applies, `Family.trims_padding`): attention is causal
and the text is pooled at end-of-text, so no kept position ever reads a dropped one. Catalogue
captions of 10-40 tokens then cost the text tower 16-40 positions instead of 77, in training
(train/step.py), held-out evaluation and every `embed_texts` call (a search query of a few words
runs on 8).
"""

from __future__ import annotations

import numpy as np

# Each distinct text length compiles the step once (about 0.5-1.5 s for ViT-B/32 on a CPU): rounding
# up to 8 keeps that to at most 10 shapes for 77 tokens and wastes 3.5 tokens a batch on average
# (16 wasted 7.5: a batch whose longest caption had 40 tokens ran the text tower on 48, and the
# step took 7 % longer; bench/README.md).
TEXT_LENGTH_MULTIPLE = 8


def end_positions(input_ids: np.ndarray, eos_token_id: int) -> np.ndarray:
    """Each row's first end-of-text position (0 for a row without one)."""
    return (input_ids == eos_token_id).argmax(axis=1)


def trim_padding(input_ids: np.ndarray, eos_token_id: int | None,
                 multiple: int = TEXT_LENGTH_MULTIPLE) -> np.ndarray:
    """Drop padding columns after the batch's last end-of-text token (rounded up to `multiple`);
    unchanged when `eos_token_id` is None or a row has no end-of-text token (truncated text)."""
    if eos_token_id is None:
        return input_ids
    if not (input_ids == eos_token_id).any(axis=1).all():
        return input_ids
    needed = int(end_positions(input_ids, eos_token_id).max()) + 1
    length = min(input_ids.shape[1], -(-needed // multiple) * multiple)
    return input_ids[:, :length]
