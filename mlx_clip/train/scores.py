"""Every score of an evaluation as bootstrap parts (mlx_clip.train.bootstrap): the one place that
says which per-item values make `mean_R@1`, `t2i_R@5`, `zero_shot_acc` or `i2i_R@1`.

Reads an `EvalDetails` (mlx_clip.train.evaluate) by its fields: `ranks` ("i2t" per image, "t2i"
per distinct caption, "i2i" per image when the run has groups; a rank < 1 or NaN means the image
had no other image of its group and is left out), `captions`, `caption_of_image`, `zero_shot`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .bootstrap import Part, paired_change, parts_interval, score_of
from .metric_names import (DIRECTIONS, I2I_RECALLS, MEAN_R1, RECALL_AT, ZERO_SHOT, ci_key,
                           recall_key)


def _image_keys(details, image_ids: Sequence[str] | None) -> np.ndarray:
    n = details.ranks["i2t"].size
    return np.asarray(image_ids, dtype=object) if image_ids is not None else np.arange(n).astype(object)


def parts_of(details, key: str, image_ids: Sequence[str] | None = None,
             per_image_captions: bool = False) -> list[Part] | None:
    """The parts of score `key` (None when the evaluation has no such score). Images are keyed by
    `image_ids` (record ids, to pair two runs) or their position; captions by their text, or, with
    `per_image_captions` (runs whose caption templates differ), each image stands for its caption."""
    images = _image_keys(details, image_ids)
    if key == MEAN_R1:
        i2t, t2i = (parts_of(details, recall_key(direction, 1), image_ids, per_image_captions)
                    for direction in ("i2t", "t2i"))
        return i2t + t2i if i2t and t2i else None
    if key == ZERO_SHOT:
        zs = details.zero_shot
        return None if zs is None else [Part(images[zs.index], zs.correct.astype(np.float64))]
    direction, _, k = key.partition("_R@")
    if not k.isdigit() or direction not in details.ranks:
        return None
    ranks = np.asarray(details.ranks[direction], dtype=np.float64)
    if direction == "t2i":
        if per_image_captions:
            return [Part(images, (ranks[details.caption_of_image] <= int(k)).astype(np.float64))]
        return [Part(np.asarray(details.captions, dtype=object), (ranks <= int(k)).astype(np.float64))]
    valid = np.isfinite(ranks) & (ranks >= 1)
    return [Part(images[valid], (ranks[valid] <= int(k)).astype(np.float64))]


def score_keys(details) -> list[str]:
    """The scores this evaluation has, in the order tables show them."""
    keys = [recall_key(d, k) for d in DIRECTIONS for k in RECALL_AT] + [MEAN_R1]
    keys += [ZERO_SHOT] if details.zero_shot is not None else []
    keys += list(I2I_RECALLS) if "i2i" in details.ranks else []
    return keys


def intervals(details) -> dict[str, list[float] | None]:
    """`NAME_ci95` for every score of `details`: what metrics.json holds and compare prints."""
    return {ci_key(key): parts_interval(parts_of(details, key) or []) for key in score_keys(details)}


def score_and_interval(details, key: str) -> tuple[float, list[float]] | None:
    parts = parts_of(details, key)
    if not parts or score_of(parts) is None:
        return None
    return score_of(parts), parts_interval(parts)


def items_of(details, key: str) -> int:
    """The items score `key` rests on, counted as a paired change counts them (its larger part:
    mean recall@1's images, not images plus captions): what decides whether it gets an interval."""
    return max((len(part.values) for part in parts_of(details, key) or []), default=0)


def change(before, after, key: str, before_ids: Sequence[str] | None = None,
           after_ids: Sequence[str] | None = None) -> tuple[float, list[float], int] | None:
    """(after - before, paired 95 % interval, items paired) of score `key` between two evaluations
    of the same items (the count is what bootstrap.words_for needs to say "too few to tell");
    captions pair by text when both evaluations have the same captions, and otherwise (other
    templates) each image stands for its own caption on both sides: pairing the few captions two
    templates happen to share (a field empty in some records) would judge a biased handful."""
    per_image = not same_captions(before, after) and (key.startswith("t2i") or key == MEAN_R1)
    b, a = parts_of(before, key, before_ids, per_image), parts_of(after, key, after_ids, per_image)
    return paired_change(b, a) if b and a else None


def same_captions(before, after) -> bool:
    """Whether two evaluations rank the same distinct captions (else their t2i changes pair images)."""
    return set(before.captions) == set(after.captions)
