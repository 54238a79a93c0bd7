"""Nearest neighbours and near-identical pairs of a collection in blocks of rows: one block of
`block` x N similarities at a time (2048 x 72,000 float32 = 590 MB at most; 512 rows by default,
147 MB), never the N x N matrix (20 GB at 72,000).
"""

from __future__ import annotations

import heapq
from typing import Iterator

import numpy as np

BLOCK_ROWS = 512


def blocks(count: int, block: int = BLOCK_ROWS) -> Iterator[tuple[int, int]]:
    for start in range(0, count, block):
        yield start, min(count, start + block)


def nearest_neighbours(matrix: np.ndarray, k: int, block: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(rows, k) indices of each row's k most similar other rows, best first, and their similarities."""
    count = len(matrix)
    k = max(0, min(k, count - 1))
    index = np.zeros((count, k), dtype=np.int32)
    score = np.zeros((count, k), dtype=np.float32)
    if k == 0:
        return index, score
    for start, stop in blocks(count, block):
        sims = matrix[start:stop] @ matrix.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        index[start:stop] = np.take_along_axis(part, order, axis=1)
        score[start:stop] = np.take_along_axis(part_scores, order, axis=1)
    return index, score


def similar_pairs(matrix: np.ndarray, threshold: float, max_pairs: int,
                  block: int = BLOCK_ROWS) -> list[tuple[float, int, int]]:
    """(similarity, i, j) with i < j for pairs at or above `threshold`, most similar first; at most
    `max_pairs` (the most similar ones: a low threshold on a big collection cannot fill the memory)."""
    heap: list[tuple[float, int, int]] = []  # the best max_pairs so far, smallest on top
    count = len(matrix)
    for start, stop in blocks(count, block):
        sims = matrix[start:stop] @ matrix[start:].T  # only columns j >= start: the upper triangle
        sims[np.tril_indices(stop - start, 0, m=sims.shape[1])] = -np.inf  # j <= i
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            item = (float(sims[r, c]), -(start + r), -(start + c))  # ties: earlier rows first
            if len(heap) < max_pairs:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    return [(s, -i, -j) for s, i, j in sorted(heap, reverse=True)]


def label_disagreement(neighbours: np.ndarray, labels: list[str | None]) -> list[tuple[float, str | None]]:
    """For each row: the share of its labelled neighbours that carry its own label, and the label
    most of them carry (None when the row or all its neighbours are unlabelled: share 1.0)."""
    out = []
    for row, near in enumerate(neighbours):
        own = labels[row]
        near_labels = [labels[j] for j in near.tolist() if labels[j]]
        if not own or not near_labels:
            out.append((1.0, None))
            continue
        counts: dict[str, int] = {}
        for label in near_labels:
            counts[label] = counts.get(label, 0) + 1
        top = max(counts, key=lambda lab: (counts[lab], lab == own))
        out.append((counts.get(own, 0) / len(near_labels), top))
    return out
