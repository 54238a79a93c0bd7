"""Retrieval recall@1/5/10 and mean rank both ways, and zero-shot accuracy over a label field.

Images that share an identical caption are interchangeable: image->text ranks the distinct
validation captions (the image's own caption is the one correct text), text->image counts
the best-ranked image with that caption as the hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import numpy as np

from ..stream import EvalStream

RECALL_AT = (1, 5, 10)


@dataclass
class EvalSet:
    """Validation images with their deterministic captions and (optional) labels."""

    image_paths: list[str]
    captions: list[str]
    labels: list[str | None]


def embed_eval_images(model, image_paths: Sequence[str], batch_size: int = 64, threads: int = 4) -> np.ndarray:
    out = []
    for batch in EvalStream(image_paths, model.image_processor, batch_size, threads):
        out.append(np.array(model.embed_pixels(batch["pixels"]).astype(mx.float32)))
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


def ranks_of_correct(similarity: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """1-based rank of the best-ranked correct column in every row."""
    best_correct = np.where(correct, similarity, -np.inf).max(axis=1, keepdims=True)
    return (similarity > best_correct).sum(axis=1) + 1


def retrieval_metrics(image_embeds: np.ndarray, caption_embeds: np.ndarray,
                      caption_of_image: np.ndarray) -> dict[str, float]:
    """caption_of_image[i] = index of image i's caption among the distinct captions."""
    similarity = image_embeds @ caption_embeds.T  # (images, captions)
    correct = caption_of_image[:, None] == np.arange(caption_embeds.shape[0])[None, :]
    metrics: dict[str, float] = {}
    for name, sim, hits in (("i2t", similarity, correct), ("t2i", similarity.T, correct.T)):
        ranks = ranks_of_correct(sim, hits)
        for k in RECALL_AT:
            metrics[f"{name}_R@{k}"] = float((ranks <= k).mean())
        metrics[f"{name}_mean_rank"] = float(ranks.mean())
    metrics["mean_R@1"] = (metrics["i2t_R@1"] + metrics["t2i_R@1"]) / 2
    return metrics


def zero_shot_accuracy(model, image_embeds: np.ndarray, labels: Sequence[str | None],
                       prompt: str = "a photo of {label}") -> tuple[float | None, int]:
    """Accuracy of picking each image's label among all labels present; (None, 0) without labels."""
    keep = [i for i, label in enumerate(labels) if label]
    if not keep:
        return None, 0
    classes = sorted({labels[i] for i in keep})
    prompts = [prompt.replace("{label}", c) for c in classes]
    class_embeds = model.embed_texts(prompts)
    predicted = (image_embeds[keep] @ class_embeds.T).argmax(axis=1)
    truth = np.array([classes.index(labels[i]) for i in keep])
    return float((predicted == truth).mean()), len(classes)


def evaluate(model, eval_set: EvalSet, label_prompt: str = "a photo of {label}", batch_size: int = 64,
             threads: int = 4, dist=None) -> dict[str, float]:
    """All validation metrics for the model's current weights.

    `dist` (mlx_clip.train.distributed.Dist, several processes): each process embeds its slice
    of the images, all gather them and compute the same metrics.
    """
    if not eval_set.image_paths:
        return {}
    if dist is not None and dist.active:
        image_embeds = dist.sharded_rows(lambda paths: embed_eval_images(model, paths, batch_size, threads),
                                         list(eval_set.image_paths))
    else:
        image_embeds = embed_eval_images(model, eval_set.image_paths, batch_size, threads)
    distinct = list(dict.fromkeys(eval_set.captions))
    caption_embeds = model.embed_texts(distinct)
    index = {c: i for i, c in enumerate(distinct)}
    metrics = retrieval_metrics(image_embeds, caption_embeds, np.array([index[c] for c in eval_set.captions]))
    accuracy, classes = zero_shot_accuracy(model, image_embeds, eval_set.labels, label_prompt)
    if accuracy is not None:
        metrics["zero_shot_acc"] = accuracy
        metrics["zero_shot_classes"] = classes
    return metrics
