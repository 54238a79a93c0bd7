"""What the captions can teach, checked before training: captions decide a fine-tune's success more
than its settings. Captions cut to near-identical strings leave the loss "stuck": the model cannot
tell images apart by text that does not differ. Said on the console and kept in runs/NAME/captions.json.

Counted over every caption a record can be given (each template that renders), by distinct image
content, so two records filed for one photo are not "sharing" a caption.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .captions import CaptionBuilder

TOP_REPEATED = 10  # repeated captions listed
PREFIX_CHARS = 40  # two captions whose first 40 characters are equal are "near-identical"
NEAR_IDENTICAL_WARN = 0.5  # warn when more than this share of records has a near-identical caption


@dataclass
class CaptionCheck:
    """The captions' figures (captions.json) and the lines the console prints."""

    records: int
    images: int  # distinct image contents
    distinct_captions: int
    images_sharing_a_caption: int  # distinct images holding a caption another image also holds
    top_repeated: list[dict] = field(default_factory=list)  # {"caption", "images"}, most images first
    median_tokens: float = 0.0
    longest_tokens: int = 0
    context_length: int = 77
    cut_captions: int = 0  # distinct captions longer than the context length (the model cuts them)
    near_identical_share: float = 0.0  # records whose caption starts like another image's caption
    field_gaps: dict[str, int] = field(default_factory=dict)  # template field -> records without its text
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """The console's caption check (and the warning, when most captions are near-identical)."""
        out = [f"caption check: {self.distinct_captions:,} distinct captions for {self.images:,} images; "
               f"{self.images_sharing_a_caption:,} images share an identical caption with another image; "
               f"tokens median {self.median_tokens:g}, longest {self.longest_tokens}; "
               f"{self.cut_captions:,} cut at {self.context_length} tokens"]
        for row in self.top_repeated[:3]:
            out.append(f"  {row['images']:,} images: {row['caption']!r}")
        out += [f"caption field {name!r}: no text in {missing:,} of {self.records:,} records (their captions leave it "
                "out)" for name, missing in self.field_gaps.items() if missing]
        if self.warning:
            out.append(self.warning)
        return out


def check_captions(captions: CaptionBuilder, image_keys: Sequence[str],
                   count_tokens: Callable[[list[str]], list[int]], context_length: int) -> CaptionCheck:
    """The check for records whose caption options are `captions.options` and whose images are
    `image_keys` (equal key: the same image); `count_tokens` counts a text's tokens uncut."""
    holders: dict[str, set[str]] = {}
    for options, key in zip(captions.options, image_keys):
        for caption in options:
            holders.setdefault(caption, set()).add(key)
    shared = {c: keys for c, keys in holders.items() if len(keys) > 1}
    repeated = sorted(shared.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:TOP_REPEATED]
    texts = list(holders)
    tokens = np.asarray(count_tokens(texts) if texts else [], np.int64)
    near = near_identical_share([captions.first(i) for i in range(len(image_keys))], image_keys)
    check = CaptionCheck(
        records=len(image_keys), images=len(set(image_keys)), distinct_captions=len(texts),
        images_sharing_a_caption=len(set().union(*shared.values())) if shared else 0,
        top_repeated=[{"caption": c, "images": len(keys)} for c, keys in repeated],
        median_tokens=float(np.median(tokens)) if tokens.size else 0.0, longest_tokens=int(tokens.max(initial=0)),
        context_length=context_length, cut_captions=int((tokens > context_length).sum()),
        near_identical_share=near, field_gaps=dict(captions.field_gaps))
    if near > NEAR_IDENTICAL_WARN:
        check.warning = (f"warning: {near:.0%} of the records' captions begin with the same {PREFIX_CHARS} "
                         "characters as another image's caption; the model can hardly tell these images apart by "
                         "their text (the loss may stay stuck at chance): put what differs first, or in other fields")
    return check


def near_identical_share(first_captions: Sequence[str], image_keys: Sequence[str]) -> float:
    """Share of records whose caption's first PREFIX_CHARS characters equal those of another
    image's caption (records of the same image do not count against each other)."""
    if not first_captions:
        return 0.0
    images_per_prefix: dict[str, set[str]] = {}
    for caption, key in zip(first_captions, image_keys):
        images_per_prefix.setdefault(caption[:PREFIX_CHARS], set()).add(key)
    near = sum(1 for caption in first_captions if len(images_per_prefix[caption[:PREFIX_CHARS]]) > 1)
    return near / len(first_captions)
