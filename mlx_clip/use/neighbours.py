"""Nearest neighbours and near-identical pairs of a collection in blocks of rows: one block of
`block` x N similarities at a time (2048 x 72,000 float32 = 590 MB at most; 512 rows by default,
147 MB), never the N x N matrix (20 GB at 72,000).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

BLOCK_ROWS = 512
INDISTINCT_SHARE = 0.1  # real near-copies are a sliver of all pairs; a tenth of them says the model is blind
INDISTINCT_SIMILARITY = 0.95  # the page's test (and --curate's default duplicate threshold)
SAMPLE_ROWS = 2000  # the page's test reads the pairs of this many images, seeded: 2 million pairs, ~0.1 s


def hardly_tells_apart(passing: int, pairs: int, images: int) -> bool:
    """Whether `passing` of `pairs` pairs at a near-copy similarity says the model does not tell
    the images apart (never on fewer than 20 images, where a few true copies are a large share)."""
    return images >= 20 and pairs > 0 and passing >= INDISTINCT_SHARE * pairs


def indistinct_share(matrix: np.ndarray, similarity: float = INDISTINCT_SIMILARITY, rows: int = SAMPLE_ROWS,
                     seed: int = 0) -> tuple[int, int, int]:
    """(pairs at `similarity` or more, pairs, images) among a seeded sample of at most `rows` images."""
    count = len(matrix)
    pick = np.sort(np.random.default_rng(seed).choice(count, min(count, rows), replace=False))
    sample = matrix[pick]
    sims = sample @ sample.T
    upper = np.triu_indices(len(pick), 1)
    return int((sims[upper] >= similarity).sum()), len(upper[0]), len(pick)


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
        index[start:stop], score[start:stop] = top_k_rows(sims, k)
    return index, score


CHUNK = 64  # columns per chunk whose maximum bounds the row's k-th largest value


def top_k_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest values, best first (ties: the earlier column), and their columns.

    The k-th largest of a row's chunk maxima is a floor no top-k value lies below, so only the
    chunks that reach it (about k of the row's 1,125 at 72,000 columns) are read again and sorted,
    and no copy of the block is made: 0.07 s against argpartition's 0.16 s (plus its negated copy)
    on 512 x 72,000. When ties bring too many chunks to the floor (a collapsed model), the floor is
    each row's exact k-th largest value instead."""
    rows, cols = sims.shape
    full = cols // CHUNK * CHUNK
    maxima = sims[:, :full].reshape(rows, -1, CHUNK).max(axis=2)  # a view: no copy
    if cols > full:
        maxima = np.concatenate([maxima, sims[:, full:].max(axis=1, keepdims=True)], axis=1)
    if maxima.shape[1] >= k:
        floor = np.partition(maxima, -k, axis=1)[:, -k]
        chunk_rows, chunk_ids = np.nonzero(maxima >= floor[:, None])
        if chunk_rows.size <= 8 * k * rows:
            columns = chunk_ids[:, None] * CHUNK + np.arange(CHUNK)  # each reached chunk's columns
            values = np.where(columns < cols, sims[chunk_rows[:, None], np.minimum(columns, cols - 1)], -np.inf)
            at, offset = np.nonzero(values >= floor[chunk_rows][:, None])
            return _first_k(chunk_rows[at], columns[at, offset], values[at, offset], rows, k, sims.dtype)
    cut = -np.partition(-sims, k - 1, axis=1)[:, k - 1:k]  # exact: of the values at the cut, the earliest
    above, at_cut = sims > cut, sims == cut
    row, col = np.nonzero(above | (at_cut & (np.cumsum(at_cut, axis=1, dtype=np.int32)
                                             <= k - above.sum(axis=1, keepdims=True))))
    return _first_k(row, col, sims[row, col], rows, k, sims.dtype)


def _first_k(row: np.ndarray, col: np.ndarray, value: np.ndarray, rows: int, k: int,
             dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per row the k best of its candidates (row, col, value), best first, ties by column."""
    order = np.lexsort((col, -value, row))
    row, col, value = row[order], col[order], value[order]
    rank = np.arange(row.size) - np.searchsorted(row, np.arange(rows))[row]
    keep = rank < k
    index, score = np.zeros((rows, k), dtype=np.int64), np.zeros((rows, k), dtype=dtype)
    index[row[keep], rank[keep]], score[row[keep], rank[keep]] = col[keep], value[keep]
    return index, score


def similar_pairs(matrix: np.ndarray, threshold: float, max_pairs: int,
                  block: int = BLOCK_ROWS) -> tuple[list[tuple[float, int, int]], int]:
    """(similarity, i, j) with i < j for pairs at or above `threshold`, most similar first (ties:
    earlier i, then earlier j), at most `max_pairs` of them; and how many pairs were at or above
    `threshold` in all, so a caller can say when `max_pairs` cut the list. Each block keeps at most
    `max_pairs` candidates, so time and memory stay bounded even when a collapsed model puts every
    pair above the threshold."""
    count, found = len(matrix), 0
    scores, firsts, seconds = np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
    for start, stop in blocks(count, block):
        sims = matrix[start:stop] @ matrix[start:].T  # only columns j >= start: the upper triangle
        sims[np.tril_indices(stop - start, 0, m=sims.shape[1])] = -np.inf  # j <= i
        flat = sims.ravel()
        passes = flat >= threshold
        passing = int(np.count_nonzero(passes))  # counted first: indices only for what is kept
        if passing == 0:
            continue
        found += passing
        if scores.size >= max_pairs:  # a full list: only a pair above its lowest can enter (a tie ranks
            passes = flat > scores.min()  # after it, from a later row), so blocks are seldom partitioned:
            passing = int(np.count_nonzero(passes))  # 72,000 images, 38 copies each: --curate 113 s -> 12 s
            if passing == 0:
                continue
        if passing <= max_pairs:
            at = np.flatnonzero(passes)
        else:  # the block's max_pairs most similar; at the cut, ties in row-major order (earlier i, j)
            cut = -np.partition(-flat, max_pairs - 1)[max_pairs - 1]
            above = np.flatnonzero(flat > cut)
            at = np.concatenate([above, np.flatnonzero(flat == cut)[:max_pairs - above.size]])
        rows, cols = np.divmod(at, sims.shape[1])
        scores = np.concatenate([scores, flat[at]])
        firsts, seconds = np.concatenate([firsts, start + rows]), np.concatenate([seconds, start + cols])
        if scores.size > max_pairs:
            keep = np.lexsort((seconds, firsts, -scores))[:max_pairs]
            scores, firsts, seconds = scores[keep], firsts[keep], seconds[keep]
    order = np.lexsort((seconds, firsts, -scores))
    return [(float(scores[k]), int(firsts[k]), int(seconds[k])) for k in order], found


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
