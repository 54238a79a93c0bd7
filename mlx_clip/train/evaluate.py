"""Retrieval recall@1/5/10 and mean rank both ways, and zero-shot accuracy over a label field.

Images that share an identical caption are interchangeable: image->text ranks the distinct
validation captions (the image's own caption is the one correct text), text->image counts
the best-ranked image with that caption as the hit.

Ties count against the correct item (its rank is 1 + the number of wrong items scoring at least
as high), so a collapsed model whose embeddings are all equal gets the worst rank, never the
best; non-finite embeddings are refused (`NonFiniteEmbeddings`), never scored.

Every recall and accuracy also carries a 95 % percentile bootstrap interval (`NAME_ci95`, from
mlx_clip.train.scores: the same function compare and curve use, so the same items give the same interval) and the validation size (`val_size`).
`evaluate(..., details=True)` also returns the per-item ranks and embeddings (`EvalDetails`),
which the run report uses for its before/after retrieval pictures and paired intervals.
"""

from __future__ import annotations

import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import mlx.core as mx
import numpy as np

from ..errors import InputError
from ..io import atomic_file
from ..data.stream import EvalSet, EvalStream  # noqa: F401  (EvalSet: the data step's, scored here)
from . import scores
from .metric_names import I2I_MEAN_RANK, I2I_QUERIES, MEAN_R1, RECALL_AT, ZERO_SHOT, mean_rank_key, recall_key


class NonFiniteEmbeddings(InputError):
    """The model produced NaN/inf embeddings (diverged weights): there is nothing honest to score."""


def check_finite_embeddings(embeds: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(embeds).all(axis=1)
    if bad.any():
        raise NonFiniteEmbeddings(f"evaluation: {int(bad.sum())} of {len(embeds)} {what} embeddings are NaN or "
                                  "infinite (the model's weights diverged); refusing to score them")


def embed_eval_images(model, image_paths: Sequence[str], batch_size: int = 64, threads: int = 4) -> np.ndarray:
    """Image embeddings in order; a progress bar on a terminal (thousands of images take minutes)."""
    from tqdm import tqdm

    out = []
    with tqdm(total=len(image_paths), desc="evaluating", unit="img", leave=False, dynamic_ncols=True,
              disable=not sys.stderr.isatty()) as bar:
        for batch in EvalStream(image_paths, model.image_processor, batch_size, threads):
            out.append(np.array(model.embed_pixels(batch["pixels"]).astype(mx.float32)))
            bar.update(len(out[-1]))
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


def ranks_of_correct(similarity: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """1-based rank of the best-ranked correct column in every row, ties counted against it:
    1 + the number of wrong columns scoring at least as high (all-equal scores: the worst rank)."""
    best_correct = np.where(correct, similarity, -np.inf).max(axis=1, keepdims=True)
    return ((similarity >= best_correct) & ~correct).sum(axis=1) + 1


def retrieval_ranks(image_embeds: np.ndarray, caption_embeds: np.ndarray,
                    caption_of_image: np.ndarray) -> dict[str, np.ndarray]:
    """{"i2t": rank of each image's caption, "t2i": rank of each distinct caption's best image}."""
    similarity = image_embeds @ caption_embeds.T  # (images, captions)
    correct = caption_of_image[:, None] == np.arange(caption_embeds.shape[0])[None, :]
    return {"i2t": ranks_of_correct(similarity, correct), "t2i": ranks_of_correct(similarity.T, correct.T)}


def metrics_from_ranks(ranks: dict[str, np.ndarray]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in ("i2t", "t2i"):
        for k in RECALL_AT:
            metrics[recall_key(name, k)] = float((ranks[name] <= k).mean())
        metrics[mean_rank_key(name)] = float(ranks[name].mean())
    metrics[MEAN_R1] = (metrics[recall_key("i2t", 1)] + metrics[recall_key("t2i", 1)]) / 2
    return metrics


def retrieval_metrics(image_embeds: np.ndarray, caption_embeds: np.ndarray,
                      caption_of_image: np.ndarray) -> dict[str, float]:
    """caption_of_image[i] = index of image i's caption among the distinct captions."""
    return metrics_from_ranks(retrieval_ranks(image_embeds, caption_embeds, caption_of_image))


# --- image-to-image recall by group -------------------------------------------------------------------

I2I_AT = (1, 5)


def i2i_ranks(image_embeds: np.ndarray, groups: Sequence[int] | None,
              images: Sequence[str] | None = None) -> np.ndarray:
    """Per image, the rank of the best-ranked other image of its group (NaN for an image with none
    beside it: not a query, as mlx_clip.train.scores reads it): each image queries the OTHER
    evaluation images, itself excluded; ties count against. `images` (each image's content): a
    copy of the query's own picture is neither a hit nor ranked above one."""
    if groups is None or len(image_embeds) < 2:
        return np.full(len(image_embeds), np.nan)
    groups = np.asarray(groups)
    similarity = image_embeds @ image_embeds.T
    same = np.eye(len(groups), dtype=bool)
    if images is not None:
        keys = np.asarray(images)
        same = keys[:, None] == keys[None, :]
    similarity[same] = -np.inf  # never its own hit, never ranked above one
    correct = (groups[:, None] == groups[None, :]) & ~same
    queries = correct.any(axis=1)
    ranks = np.full(len(image_embeds), np.nan)
    ranks[queries] = ranks_of_correct(similarity[queries], correct[queries])
    return ranks


def i2i_metrics(ranks: np.ndarray) -> dict:
    """`i2i_R@1`, `i2i_R@5`, `i2i_mean_rank` and `i2i_queries` of per-image ranks (NaN: not a query;
    their intervals come with the others from mlx_clip.train.scores); with no query (no image has
    another of its group here) only the count and `i2i_note`: absent, never 0."""
    ranks = ranks[np.isfinite(ranks)]
    out: dict = {I2I_QUERIES: int(ranks.size)}
    if not ranks.size:
        out["i2i_note"] = ("image-to-image recall skipped: no evaluation image has another photo of its object "
                           "(--group-field) beside it")
        return out
    for k in I2I_AT:
        out[recall_key("i2i", k)] = float((ranks <= k).mean())
    out[I2I_MEAN_RANK] = float(ranks.mean())
    return out


# --- intervals (one owner: mlx_clip.train.bootstrap, the parts of each score: mlx_clip.train.scores) ---

def retrieval_intervals(ranks: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """`NAME_ci95` for every recall@k and for mean_R@1 of these ranks (as evaluate writes them)."""
    from types import SimpleNamespace

    captions = [str(i) for i in range(ranks["t2i"].size)]
    return scores.intervals(SimpleNamespace(ranks=ranks, captions=captions, caption_of_image=None, zero_shot=None))


@dataclass
class ZeroShot:
    """Per labelled validation image: its index, true and predicted class."""

    classes: list[str]
    index: np.ndarray  # validation positions with a label
    truth: np.ndarray
    predicted: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.truth == self.predicted


def class_embeddings(model, classes: Sequence[str], prompts: str | Sequence[str]) -> np.ndarray:
    """One unit vector per class; several prompts form an ensemble as in CLIP: each prompt's
    embedding normalised, averaged over prompts, renormalised. One prompt: its embeddings as is."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    per_prompt = [np.asarray(model.embed_texts([p.replace("{label}", c) for c in classes])) for p in prompts]
    if len(per_prompt) == 1:
        return per_prompt[0]
    mean = np.mean([e / np.linalg.norm(e, axis=1, keepdims=True) for e in per_prompt], axis=0)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def pessimistic_argmax(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Argmax per row where a tie with the true class goes to another class (ties count against)."""
    lowered = scores.copy()
    rows = np.arange(len(truth))
    lowered[rows, truth] = np.nextafter(scores[rows, truth], -np.inf)
    return lowered.argmax(axis=1)


def single_label_note(labels: Sequence[str | None]) -> str | None:
    """Why zero-shot is skipped when every labelled image has the same label (it would be trivially 1.0)."""
    present = {label for label in labels if label}
    if len(present) == 1:
        return (f"zero-shot skipped: every labelled validation image has the label {next(iter(present))!r}, "
                "so it would be trivially 1.0")
    return None


def zero_shot_predictions(model, image_embeds: np.ndarray, labels: Sequence[str | None],
                          prompt: str | Sequence[str] = "a photo of {label}") -> ZeroShot | None:
    """Each labelled image's class among all labels present, by its nearest class prompt (or prompt
    ensemble); None without labels or with a single label (see single_label_note)."""
    keep = [i for i, label in enumerate(labels) if label]
    classes = sorted({labels[i] for i in keep})
    if len(classes) < 2:
        return None
    class_embeds = class_embeddings(model, classes, prompt)
    check_finite_embeddings(class_embeds, "class prompt")
    position = {c: j for j, c in enumerate(classes)}
    truth = np.array([position[labels[i]] for i in keep])
    predicted = pessimistic_argmax(image_embeds[keep] @ class_embeds.T, truth)
    return ZeroShot(classes, np.array(keep), truth, predicted)


@dataclass
class EvalDetails:
    """Per-item results of one evaluation: what the report and the paired intervals need."""

    image_embeds: np.ndarray
    caption_embeds: np.ndarray  # one per distinct caption
    captions: list[str]  # the distinct captions
    caption_of_image: np.ndarray
    ranks: dict[str, np.ndarray] = field(default_factory=dict)
    zero_shot: ZeroShot | None = None

    def save(self, path: str | Path) -> None:
        """Plain arrays only: the texts go in as UTF-8 JSON bytes, so `load` never needs pickle."""
        arrays = {"image_embeds": self.image_embeds, "caption_embeds": self.caption_embeds,
                  "captions_json": _json_bytes(self.captions), "caption_of_image": self.caption_of_image,
                  "i2t_ranks": self.ranks["i2t"], "t2i_ranks": self.ranks["t2i"]}
        if "i2i" in self.ranks:  # per query: paired intervals before/after (same queries)
            arrays["i2i_ranks"] = self.ranks["i2i"]
        if self.zero_shot is not None:
            arrays.update(zs_classes_json=_json_bytes(self.zero_shot.classes), zs_index=self.zero_shot.index,
                          zs_truth=self.zero_shot.truth, zs_predicted=self.zero_shot.predicted)
        with atomic_file(path) as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "EvalDetails":
        """Read with allow_pickle=False: a run folder may come from anyone, and a pickled array in a
        crafted .npz would run code. Files from older versions stored the texts as pickled object
        arrays: their numbers are read, their texts are not (empty), so compare and the report still work."""
        try:
            with np.load(path, allow_pickle=False) as data:
                zero_shot = None
                if "zs_index" in data:
                    zero_shot = ZeroShot(_texts(data, "zs_classes", path), data["zs_index"], data["zs_truth"],
                                         data["zs_predicted"])
                ranks = {"i2t": data["i2t_ranks"], "t2i": data["t2i_ranks"]}
                if "i2i_ranks" in data:
                    ranks["i2i"] = data["i2i_ranks"]
                return cls(data["image_embeds"], data["caption_embeds"], _texts(data, "captions", path),
                           data["caption_of_image"], ranks, zero_shot)
        except InputError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise InputError(f"{path}: not a readable evaluation file ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else 'damaged'})") from None


def _json_bytes(texts: Sequence[str]) -> np.ndarray:
    return np.frombuffer(json.dumps(list(texts), ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def _texts(data, key: str, path: str | Path) -> list[str]:
    """The texts stored under `key`_json; an older file's pickled `key` array reads as [] (never unpickled)."""
    if f"{key}_json" not in data:
        try:
            return [str(text) for text in data[key]]  # a plain unicode array reads without pickle
        except ValueError:  # an object array: pickled, so not read
            return []
    texts = json.loads(data[f"{key}_json"].tobytes().decode("utf-8"))
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise InputError(f"{path}: {key}_json is not a list of texts")
    return texts


def evaluate(model, eval_set: EvalSet, label_prompt: str | Sequence[str] = "a photo of {label}",
             batch_size: int = 64, threads: int = 4, details: bool = False, keep: str | Path | None = None, dist=None):
    """All validation metrics for the model's current weights, with 95 % bootstrap intervals.

    details=True returns (metrics, EvalDetails); `keep` saves the details to that .npz file.
    `dist` (mlx_clip.train.distributed.Dist, several processes): each process embeds its slice
    of the images, all gather them and compute the same metrics.
    """
    if not eval_set.image_paths:
        return ({}, None) if details else {}
    if dist is not None and dist.active:
        image_embeds = dist.sharded_rows(lambda paths: embed_eval_images(model, paths, batch_size, threads),
                                         list(eval_set.image_paths))
    else:
        image_embeds = embed_eval_images(model, eval_set.image_paths, batch_size, threads)
    check_finite_embeddings(image_embeds, "image")
    distinct = list(dict.fromkeys(eval_set.captions))
    caption_embeds = model.embed_texts(distinct)
    check_finite_embeddings(np.asarray(caption_embeds), "caption")
    index = {c: i for i, c in enumerate(distinct)}
    caption_of_image = np.array([index[c] for c in eval_set.captions])
    ranks = retrieval_ranks(image_embeds, caption_embeds, caption_of_image)
    metrics: dict = metrics_from_ranks(ranks)
    metrics["val_size"] = len(eval_set.image_paths)
    metrics["val_captions"] = len(distinct)
    if eval_set.groups is not None:
        i2i = i2i_ranks(image_embeds, eval_set.groups, eval_set.images)
        metrics.update(i2i_metrics(i2i))
        if np.isfinite(i2i).any():  # a score only where some image has another of its group beside it
            ranks["i2i"] = i2i
    zero_shot = zero_shot_predictions(model, image_embeds, eval_set.labels, label_prompt)
    if zero_shot is not None:
        metrics[ZERO_SHOT] = float(zero_shot.correct.mean())
        metrics["zero_shot_classes"] = len(zero_shot.classes)
        metrics["zero_shot_size"] = int(zero_shot.index.size)
    elif single_label_note(eval_set.labels):
        metrics["zero_shot_note"] = single_label_note(eval_set.labels)
    result = EvalDetails(image_embeds, np.asarray(caption_embeds), distinct, caption_of_image, ranks, zero_shot)
    metrics.update(scores.intervals(result))
    if keep is not None:
        result.save(keep)
    return (metrics, result) if details else metrics
