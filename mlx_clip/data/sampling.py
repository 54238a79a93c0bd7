"""How many records to sample, and which: simple and stratified random samples.

Samples are lists of record indices in ascending order (the records' own order), so the same
seed and the same records always give the same sample, and a sample is never just the file's
first N records.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from fractions import Fraction
from typing import Hashable, Sequence

__all__ = [
    "MISSING_STRATUM",
    "sample_size",
    "explain_sample_size",
    "simple_sample",
    "stratified_sample",
    "allocate",
]

MISSING_STRATUM = "(missing)"
"""The stratum of records that lack the stratify field."""


def _margin_fraction(margin: float | str | Fraction) -> Fraction:
    # Fraction(str(0.025)) is exactly 1/40, where Fraction(0.025) carries binary float error.
    value = margin if isinstance(margin, Fraction) else Fraction(str(margin))
    if not 0 < value < 1:
        raise ValueError(f"margin must be between 0 and 1 (exclusive), got {margin}")
    return value


def sample_size(population: int, margin: float | str | Fraction) -> int:
    """Yamane's sample size ``ceil(N / (1 + N * e**2))``, computed in exact fractions.

    >>> sample_size(72_363, 0.025)
    1566
    """
    if population < 0:
        raise ValueError(f"population must be >= 0, got {population}")
    if population == 0:
        return 0
    e = _margin_fraction(margin)
    return math.ceil(Fraction(population) / (1 + population * e * e))


def explain_sample_size(population: int, margin: float | str | Fraction) -> str:
    """One line saying how :func:`sample_size` found n, e.g. for the CLI to print."""
    n = sample_size(population, margin)
    return (
        f"{population:,} records, margin {margin} -> n = ceil(N / (1 + N e^2)) = {n:,}"
    )


def simple_sample(n_records: int, n: int, seed: int = 0) -> list[int]:
    """``n`` distinct indices drawn at random from ``range(n_records)``, ascending.

    The same ``seed`` gives the same sample. ``n >= n_records`` gives every index.
    """
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    if n >= n_records:
        return list(range(n_records))
    return sorted(random.Random(seed).sample(range(n_records), n))


def allocate(sizes: dict[Hashable, int], n: int) -> dict[Hashable, int]:
    """Split ``n`` among strata in proportion to their ``sizes`` (largest-remainder method).

    Every stratum gets at least one record (so ``n`` must be at least the number of strata);
    the few records this takes are taken from the strata most above their proportional share.
    Ties are broken by the strata's order in ``sizes``.
    """
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    if n < len(sizes):
        raise ValueError(
            f"a stratified sample of {n} cannot hold one record from each of the "
            f"{len(sizes)} strata; ask for at least {len(sizes)}"
        )
    quotas = {s: Fraction(n * size, total) for s, size in sizes.items()}
    counts = {s: math.floor(q) for s, q in quotas.items()}
    order = list(sizes)
    position = {s: i for i, s in enumerate(order)}
    left = n - sum(counts.values())
    by_remainder = sorted(order, key=lambda s: (-(quotas[s] - counts[s]), position[s]))
    for s in by_remainder[:left]:
        counts[s] += 1
    for s in order:
        if counts[s] == 0:
            donor = max(
                (d for d in order if counts[d] > 1),
                key=lambda d: (counts[d] - quotas[d], -position[d]),
            )
            counts[donor] -= 1
            counts[s] = 1
    return counts


def stratified_sample(
    labels: Sequence[Hashable | None], n: int, seed: int = 0
) -> list[int]:
    """``n`` indices into ``labels``, each stratum (label value) represented in proportion.

    Allocation is :func:`allocate` (largest remainder, at least one per stratum); ``None``
    labels form the stratum :data:`MISSING_STRATUM`. Within a stratum the records are drawn at
    random with a generator seeded by ``seed`` and the stratum's label. Returns ascending indices.
    """
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    strata: dict[Hashable, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        strata[MISSING_STRATUM if label is None else label].append(index)
    if n >= len(labels):
        return list(range(len(labels)))
    counts = allocate({s: len(members) for s, members in strata.items()}, n)
    chosen: list[int] = []
    for stratum, members in strata.items():
        rng = random.Random(f"{seed}\x00{stratum!r}")
        chosen.extend(rng.sample(members, counts[stratum]))
    return sorted(chosen)


def choose_sample(
    records: Sequence[dict],
    sample: int | None = None,
    margin: float | str | None = None,
    stratify: str | None = None,
    seed: int = 0,
) -> tuple[list[int], str]:
    """Indices of the records to use, and one line saying how they were chosen.

    ``sample`` is the number of records, or ``margin`` finds it with :func:`sample_size`;
    with neither, every record is used. ``stratify`` names a (dotted) field whose values are
    the strata; records without it form :data:`MISSING_STRATUM`.
    """
    from .records import get_field

    total = len(records)
    if sample is not None and margin is not None:
        raise ValueError("give either a sample size or a margin, not both")
    if margin is not None:
        n = sample_size(total, margin)
        how = explain_sample_size(total, margin)
    elif sample is not None:
        if sample < 1:
            raise ValueError(f"sample size must be at least 1, got {sample}")
        n = sample
        how = f"{total:,} records, sample of {min(n, total):,} asked"
    else:
        return list(range(total)), f"{total:,} records, all used (no sample asked)"
    if n >= total:
        return list(range(total)), f"{how}; that is every record"
    if stratify:
        labels = [_stratum_label(get_field(r, stratify, None)) for r in records]
        indices = stratified_sample(labels, n, seed)
        strata = len(set(labels))
        how += f"; stratified by '{stratify}' ({strata:,} strata), seed {seed}"
    else:
        indices = simple_sample(total, n, seed)
        how += f"; simple random sample, seed {seed}"
    return indices, how


def _stratum_label(value: object) -> Hashable | None:
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    import json

    return json.dumps(value, sort_keys=True, ensure_ascii=False)
