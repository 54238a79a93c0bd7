"""Decode images on background threads while the model embeds: the one pipeline that evaluation
(data/stream.py's EvalStream), the index and the llm plugin's `embed-multi` share.

PIL releases the GIL while it decodes and resamples, and NumPy while it normalises, so a few
threads keep up with the model; `ahead` bounds how many decoded images wait in memory (a
72,000-image collection never holds more than a few batches of pixels at once).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from ..models.preprocess import ImageProcessor, load_image

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_THREADS = 4


def image_pixels(path: str | Path, processor: ImageProcessor) -> np.ndarray:
    """One image file -> (H, W, 3) float32 pixels, through the project's bounded loader
    (load_image: its pixel budget applies) and the model's own resize, crop and normalisation."""
    return processor.normalize(np.asarray(processor.resize_and_crop(load_image(path))))


def ordered_map(work: Callable[[T], R], items: Iterable[T], threads: int = DEFAULT_THREADS,
                ahead: int = 128) -> Iterator[tuple[T, R | Exception]]:
    """(item, work(item)) in the items' order, computed on `threads` threads with at most `ahead`
    results pending; an exception is handed back in place of its result (one bad image never
    stops the others)."""
    pending: deque[tuple[T, Future]] = deque()
    source = iter(items)
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="decode") as pool:
        for item in source:
            pending.append((item, pool.submit(work, item)))
            if len(pending) >= max(1, ahead):
                yield _result(*pending.popleft())
        while pending:
            yield _result(*pending.popleft())


def _result(item: T, future: Future) -> tuple[T, object]:
    try:
        return item, future.result()
    except Exception as err:  # noqa: BLE001 - returned to the caller, who lists it
        return item, err
