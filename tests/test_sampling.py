"""sampling: sample size, simple and stratified samples."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import pytest

from mlx_clip.data.sampling import (
    MISSING_STRATUM,
    allocate,
    choose_sample,
    explain_sample_size,
    sample_size,
    simple_sample,
    stratified_sample,
)


@pytest.mark.parametrize(
    "population, margin, expected",
    [
        (72_363, 0.025, 1_566),
        (72_363, "0.025", 1_566),
        (1_000, 0.05, 286),  # 1000 / 3.5 = 285.7
        (400, 0.05, 200),  # exactly 400 / 2
        (400, 0.35, 8),  # exactly 8; plain float arithmetic gives 8.000000000000002 -> 9
        (1_600, 0.175, 32),  # exactly 32; floats give 33
        (100, 0.1, 50),  # exactly 100 / 2
        (10, 0.05, 10),  # 10 / 1.025 = 9.76
        (1, 0.05, 1),
        (0, 0.05, 0),
        (1_000_000, 0.01, 9_901),  # 1e6 / 101 = 9900.99
    ],
)
def test_sample_size(population, margin, expected):
    assert sample_size(population, margin) == expected


def test_sample_size_is_exact_where_floats_are_not():
    # Checked against exact fractions of the decimal margin, as a user writes it.
    for population in range(1, 3000):
        for margin in ("0.05", "0.025", "0.1", "0.03"):
            e = Fraction(margin)
            exact = Fraction(population) / (1 + population * e * e)
            n = sample_size(population, margin)
            assert n - 1 < exact <= n


def test_explanation():
    assert explain_sample_size(72_363, 0.025) == (
        "72,363 records, margin 0.025 -> n = ceil(N / (1 + N e^2)) = 1,566"
    )


@pytest.mark.parametrize("margin", [0, 1, -0.1, 1.5])
def test_bad_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        sample_size(100, margin)


def test_simple_sample_is_seeded_sorted_and_not_the_first_n():
    a = simple_sample(10_000, 100, seed=0)
    assert a == simple_sample(10_000, 100, seed=0)
    assert a != simple_sample(10_000, 100, seed=1)
    assert a == sorted(a) and len(set(a)) == 100
    assert a != list(range(100))
    assert max(a) > 5_000
    assert simple_sample(5, 10, seed=0) == [0, 1, 2, 3, 4]


def test_stratified_sample_keeps_each_share_within_one_record():
    labels = ["coin"] * 5_000 + ["vase"] * 3_000 + ["lamp"] * 1_500 + ["ring"] * 497 + ["seal"] * 3
    n = 1_566
    sample = stratified_sample(labels, n, seed=0)
    assert len(sample) == n and sample == sorted(sample) and len(set(sample)) == n
    drawn = Counter(labels[i] for i in sample)
    sizes = Counter(labels)
    for stratum, size in sizes.items():
        assert abs(drawn[stratum] - n * size / len(labels)) < 1, stratum
    assert sample == stratified_sample(labels, n, seed=0)
    assert sample != stratified_sample(labels, n, seed=1)
    assert drawn == Counter(labels[i] for i in stratified_sample(labels, n, seed=1))


def test_every_stratum_is_represented():
    labels = ["big"] * 990 + ["tiny1"] * 5 + ["tiny2"] * 5
    drawn = Counter(labels[i] for i in stratified_sample(labels, 50, seed=0))
    assert drawn == {"big": 48, "tiny1": 1, "tiny2": 1}
    with pytest.raises(ValueError, match="at least 3"):
        stratified_sample(labels, 2, seed=0)


def test_missing_labels_form_their_own_stratum():
    labels = ["a"] * 50 + [None] * 50
    sample = stratified_sample(labels, 10, seed=0)
    assert sum(labels[i] is None for i in sample) == 5
    counts = allocate({"a": 50, MISSING_STRATUM: 50}, 10)
    assert counts == {"a": 5, MISSING_STRATUM: 5}


def test_allocate_largest_remainder():
    counts = allocate({"a": 7, "b": 2, "c": 1}, 5)
    assert sum(counts.values()) == 5
    assert counts == {"a": 3, "b": 1, "c": 1}  # quotas 3.5, 1, 0.5


def test_choose_sample():
    records = [{"period": "roman" if i % 4 else "iron age"} for i in range(400)]
    indices, how = choose_sample(records, margin=0.05, seed=2)
    assert len(indices) == 200 and "n = ceil(N / (1 + N e^2)) = 200" in how
    indices, how = choose_sample(records, sample=40, stratify="period", seed=2)
    assert sum(records[i]["period"] == "iron age" for i in indices) == 10
    assert "stratified by 'period' (2 strata)" in how
    assert choose_sample(records)[0] == list(range(400))
    with pytest.raises(ValueError, match="either"):
        choose_sample(records, sample=3, margin=0.1)
