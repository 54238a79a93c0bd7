"""report.html's picture sections: text -> image retrieval before and after, zero-shot accuracy
per label, and the worst mistakes, with data-URI thumbnails of the validation images."""

from __future__ import annotations

from collections import Counter

import numpy as np

from ...train.evaluate import EvalDetails
from .html import esc, fmt, img, table, thumbnail_uri

EXAMPLES = 8
TOP_K = 5
WORST = 6


class Thumbnails:
    """Data-URI thumbnails of validation images, each made once."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self.cache: dict[int, str] = {}

    def __call__(self, index: int) -> str:
        if index not in self.cache:
            self.cache[index] = thumbnail_uri(self.paths[index])
        return self.cache[index]



def _thumb(thumbs: Thumbnails, index: int, captions: list[str], hit: bool, note: str = "") -> str:
    cls = "thumb hit" if hit else "thumb"
    mark = '<span class="mark">✓</span>' if hit else ""
    caption = captions[index]
    return (f'<figure class="{cls}">{img(thumbs(index), caption)}{mark}'
            f'<figcaption title="{esc(caption)}">{esc(note or caption)}</figcaption></figure>')


def _top_images(details: EvalDetails, caption: int, k: int) -> np.ndarray:
    scores = details.image_embeds @ details.caption_embeds[caption]
    return np.argsort(-scores, kind="stable")[:k]


def _retrieval_rows(before, after, thumbs, captions, caption: int, k: int = TOP_K) -> str:
    rows = ""
    for tag, details in (("before", before), ("after", after)):
        if details is None:
            continue
        rank = int(details.ranks["t2i"][caption])
        figures = "".join(_thumb(thumbs, int(i), captions, details.caption_of_image[i] == caption)
                          for i in _top_images(details, caption, k))
        rows += (f'<div class="row"><span class="tag">{tag}<br>rank {rank}</span>{figures}</div>')
    return rows


def retrieval_section(before, after, thumbs, captions) -> str:
    details = after or before
    if details is None or not len(details.captions):
        return ""
    n = len(details.captions)
    chosen = sorted(np.random.default_rng(0).choice(n, size=min(EXAMPLES, n), replace=False))
    out = (f"<h2>Text → image retrieval: {len(chosen)} validation captions</h2>"
           f"<p class=muted>The top {TOP_K} of {len(thumbs.paths)} validation images for each caption; "
           "the correct image has a green border and ✓; rank = position of the best correct image.</p>")
    for c in chosen:
        out += (f'<div class="query"><div class="caption">“{esc(details.captions[c])}”</div>'
                + _retrieval_rows(before, after, thumbs, captions, int(c)) + "</div>")
    return out


def zero_shot_section(before, after, labels) -> str:
    details = after or before
    if details is None or details.zero_shot is None:
        return ""
    zs = details.zero_shot
    rows = []
    for j, label in enumerate(zs.classes):
        members = zs.truth == j
        row = [label, int(members.sum())]
        for d in (before, after):
            z = d.zero_shot if d is not None else None
            row.append(fmt(float(z.correct[z.truth == j].mean())) if z is not None and z.classes == zs.classes
                       else "–")
        wrong = Counter(zs.classes[p] for p in zs.predicted[members & ~zs.correct])
        row.append(", ".join(f"{k} ({v})" for k, v in wrong.most_common(2)))
        rows.append(row)
    return ("<h2>Zero-shot accuracy per label</h2><p class=muted>Each validation image classified by its "
            "nearest label prompt among all labels present.</p>"
            + table(["label", "validation images", "before", "after", "after: mistaken for"], rows,
                    numeric=(1, 2, 3)))


def worst_section(before, after, thumbs, captions) -> str:
    if after is None or not len(after.captions):
        return ""
    order = np.argsort(-after.ranks["t2i"], kind="stable")[:WORST]
    out = (f"<h2>Worst mistakes after fine-tuning</h2><p class=muted>The {len(order)} validation captions "
           "whose correct image ranks lowest; the correct image, then what was retrieved instead.</p>")
    for c in order:
        c = int(c)
        truth = int(np.flatnonzero(after.caption_of_image == c)[0])
        same_items = before is not None and before.ranks["t2i"].shape == after.ranks["t2i"].shape
        rank_before = f"{int(before.ranks['t2i'][c])} → " if same_items else ""
        retrieved = "".join(_thumb(thumbs, int(i), captions, False) for i in _top_images(after, c, 4))
        out += (f'<div class="query"><div class="caption">“{esc(after.captions[c])}” — rank '
                f"{rank_before}{int(after.ranks['t2i'][c])}</div><div class=row><span class=tag>correct</span>"
                f"{_thumb(thumbs, truth, captions, True)}<span class=tag>retrieved</span>{retrieved}</div></div>")
    return out
