"""The one bootstrap: every interval that finetune, the report, compare and curve print comes from here.

A score is the mean of one or more *parts*, each a set of per-item values keyed by what the item is
(a test image's record id, a distinct caption's text): mean recall@1 is (image->caption hits over
images + caption->image hits over distinct captions) / 2, every other score has one part. Each part
is resampled with replacement, seeded; its values are sorted first, so the interval depends only on
the values, the seed and the number of resamples, never on the order the items were evaluated in
(finetune's test order and compare's record-id order give the same interval). A paired change
resamples, per part, the differences over the items both sides share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


@dataclass
class Part:
    """Per-item values of one part of a score; `keys` name the items (for pairing two runs)."""

    keys: np.ndarray
    values: np.ndarray


def resample_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n) indices drawn with replacement; the same n and seed give the same draws."""
    return np.random.default_rng([seed, n]).integers(0, n, size=(resamples, n))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_means(values, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Bootstrap replicates of the mean of `values` (sorted first: the items' order does not matter)."""
    values = np.sort(np.asarray(values, dtype=np.float64).ravel())
    return values[resample_indices(values.size, resamples, seed)].mean(axis=1)


def bootstrap_ci(values, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = LEVEL) -> list[float] | None:
    """Percentile interval of the mean of per-item values (e.g. 0/1 hits); None without items."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    return percentile_interval(bootstrap_means(values, resamples, seed), level)


def paired_bootstrap_ci(before, after, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        level: float = LEVEL) -> list[float] | None:
    """Interval of mean(after) - mean(before) over the same resampled items (a paired bootstrap)."""
    diff = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    return bootstrap_ci(diff, resamples, seed, level)


def score_of(parts: Sequence[Part]) -> float | None:
    """The score: the mean of its parts' means (None when a part is empty)."""
    if not parts or any(p.values.size == 0 for p in parts):
        return None
    return float(np.mean([p.values.mean() for p in parts]))


def parts_interval(parts: Sequence[Part], resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """95 % interval of score_of(parts): each part resampled on its own (part j with seed + j)."""
    if score_of(parts) is None:
        return None
    replicates = np.mean([bootstrap_means(p.values, resamples, seed + j) for j, p in enumerate(parts)], axis=0)
    return percentile_interval(replicates)


def paired_parts(before: Sequence[Part], after: Sequence[Part]) -> list[Part] | None:
    """Per part, after - before over the items both share (matched by key); None if a part shares none."""
    out = []
    for b, a in zip(before, after):
        shared, b_at, a_at = np.intersect1d(b.keys, a.keys, return_indices=True)
        if shared.size == 0:
            return None
        out.append(Part(shared, a.values[a_at] - b.values[b_at]))
    return out if len(out) == len(before) == len(after) else None


def paired_change(before: Sequence[Part], after: Sequence[Part]) -> tuple[float, list[float], int] | None:
    """(after - before, its paired 95 % interval, how many items paired), or None when nothing pairs.
    A score of two parts (mean recall@1: images, and their distinct captions, never more) counts its
    larger part, the images: 10 images and their 10 captions are 10 items, not 20."""
    diffs = paired_parts(before, after)
    if diffs is None or score_of(diffs) is None:
        return None
    return score_of(diffs), parts_interval(diffs), max(len(d.values) for d in diffs)


MIN_ITEMS = 20
"""Fewer paired items than this and a change gets no words: a bootstrap over 2 query images gives
an interval like [+1.000, +1.000] that says nothing (seen on the emoji tour: two images share one
picture)."""
TOO_FEW = "too few to tell"


def shown_interval(interval: Sequence[float] | None, items: int | None) -> Sequence[float] | None:
    """The interval to print beside a score or a change: none on fewer than MIN_ITEMS items."""
    return None if items is not None and items < MIN_ITEMS else interval


def too_few_text(change: float, items: int) -> str:
    """A change on a handful of items, as every table and line shows it: the point alone."""
    return f"{change:+.3f}, {TOO_FEW} ({items} items)"


def signed_text(change: float, interval: Sequence[float]) -> str:
    """A change with its paired interval: `+0.042 [+0.000, +0.125]`."""
    return f"{change:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]"


def change_text(change: float, interval: Sequence[float], items: int | None) -> str:
    """A change as a line says it: with its interval and words, or the point alone on a handful."""
    words = words_for(interval, items)
    return too_few_text(change, items) if words == TOO_FEW else f"{signed_text(change, interval)} {words}"


def score_text(value: float, interval: Sequence[float] | None, items: int | None) -> str:
    """A score with its interval (`0.250 [0.100, 0.400]`), the point alone on a handful of items."""
    shown = shown_interval(interval, items)
    return f"{value:.3f}" + (f" [{shown[0]:.3f}, {shown[1]:.3f}]" if shown else "")


def words_for(interval: Sequence[float] | None, items: int | None = None) -> str:
    """The only words a change may carry: they follow its interval, never the point estimate, and
    say nothing but TOO_FEW when it rests on fewer than MIN_ITEMS paired items."""
    if not interval:
        return "not measured"
    if items is not None and items < MIN_ITEMS:
        return TOO_FEW
    if interval[0] > 0:
        return "better"
    if interval[1] < 0:
        return "worse"
    return "not distinguishable"
