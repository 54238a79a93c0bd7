"""The metric keys of metrics.json, the report, the card, compare and curve: written once, here.

A key is what `evaluate` writes (`mean_R@1`), its interval is `ci_key(key)` (`mean_R@1_ci95`).
Scores are higher-is-better fractions; mean ranks are lower-is-better and carry no interval.
"""

from __future__ import annotations

RECALL_AT = (1, 5, 10)
DIRECTIONS = ("i2t", "t2i")  # image -> its caption, caption -> its image

MEAN_R1 = "mean_R@1"
ZERO_SHOT = "zero_shot_acc"
I2I_R1 = "i2i_R@1"  # image -> another image of its group (issue 23's --group-field)
I2I_R5 = "i2i_R@5"
I2I_MEAN_RANK = "i2i_mean_rank"
I2I_QUERIES = "i2i_queries"  # a count: the query images image-to-image recall rests on
RETENTION = "retention"  # metrics.json: what the fine-tuned model kept of the base model's general skill


def recall_key(direction: str, k: int) -> str:
    """`i2t_R@5`: the share of queries whose right answer ranks in the top k."""
    return f"{direction}_R@{k}"


def mean_rank_key(direction: str) -> str:
    return f"{direction}_mean_rank"


def ci_key(key: str) -> str:
    """The key of a score's 95 % bootstrap interval."""
    return f"{key}_ci95"


RETRIEVAL_RECALLS = tuple(recall_key(d, k) for d in DIRECTIONS for k in RECALL_AT)
I2I_RECALLS = (I2I_R1, I2I_R5)
SCORE_KEYS = RETRIEVAL_RECALLS + (MEAN_R1, ZERO_SHOT) + I2I_RECALLS  # fractions with intervals
RANK_KEYS = tuple(mean_rank_key(d) for d in DIRECTIONS) + (I2I_MEAN_RANK,)  # lower is better

# The verdict's areas: the one score that speaks for each, in the words a reader uses.
HEADLINE = {MEAN_R1: ("retrieval", "mean recall@1"),
            ZERO_SHOT: ("zero-shot tagging", "accuracy"),
            I2I_R1: ("image-to-image search", "recall@1")}

SHORT = {MEAN_R1: "mean@1", ZERO_SHOT: "0-shot", I2I_R1: "i2i@1", I2I_R5: "i2i@5",
         **{recall_key(d, k): f"{d}@{k}" for d in DIRECTIONS for k in RECALL_AT}}


def short_name(key: str) -> str:
    """The compact column title (`i2t@5`) of a metric key."""
    return SHORT.get(key, key)
