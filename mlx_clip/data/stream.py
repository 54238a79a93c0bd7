"""mlx-data streams for training and evaluation; each image travels with its record.

Every sample is one dict: `index`, `record_id`, `caption`, `input_ids`, `image_path`,
`image_group` (the record's group, equal for records sharing an image or a --group-field value:
the loss counts them as positives), the augmentation draw `aug`, and (after loading) `pixels`. Loading and augmenting happen in a
`sample_transform` on that same dict, then `batch` and `ordered_prefetch` run it on
background threads, so an image can never be separated from its record id and caption.

The random choices (order, caption template, crop box, flips, rotation, colour jitter) are
drawn up front for each epoch from `numpy.random.default_rng([seed, epoch])` and applied
inside the stream. mlx-data's own random image ops draw from a state shared by the
prefetch threads, which cannot be replayed; drawing here makes `--resume` continue exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import mlx.data as dx
import numpy as np
from PIL import Image

from ..flags import setting
from .decode_threads import ordered_map
from .captions import CaptionBuilder
from .dataset import Item
from ..models.image_open import decode_reduced, load_image
from ..models.preprocess import ImageProcessor

# Columns of the per-sample augmentation draw.
SCALE, LOG_RATIO, U, V, HFLIP, VFLIP, ANGLE, BRIGHT, CONTRAST, SATUR = range(10)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations: random resized crop, flips, rotation, colour jitter."""

    crop_min_area: float = setting(0.6, "smallest random crop, as a fraction of the image's area (the largest "
                                   "is the whole image)")
    crop_ratio: tuple[float, float] = setting((3 / 4, 4 / 3), "width / height range of the crop", cli=False)
    hflip: bool = setting(True, "no random horizontal flips (e.g. text on objects)", flag="--no-hflip")
    vflip: bool = setting(False, "random vertical flips")
    rotate: float = setting(0.0, "random rotation up to DEG degrees either way", metavar="DEG")
    color_jitter: float = setting(0.0, "random brightness, contrast and saturation in [1-S, 1+S]", metavar="S")


def draw_augmentations(rng: np.random.Generator, n: int, config: AugmentConfig) -> np.ndarray:
    """(n, 10) float32: one row of random choices per sample."""
    out = np.zeros((n, 10), np.float32)
    out[:, SCALE] = rng.uniform(config.crop_min_area, 1.0, n)
    out[:, LOG_RATIO] = rng.uniform(math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), n)
    out[:, U] = rng.uniform(0, 1, n)
    out[:, V] = rng.uniform(0, 1, n)
    flips = rng.uniform(0, 1, (n, 2))
    out[:, HFLIP] = (flips[:, 0] < 0.5) & config.hflip
    out[:, VFLIP] = (flips[:, 1] < 0.5) & config.vflip
    out[:, ANGLE] = rng.uniform(-1, 1, n) * config.rotate
    jitter = rng.uniform(-1, 1, (n, 3)) * config.color_jitter
    out[:, BRIGHT:SATUR + 1] = 1 + jitter
    return out


# Evaluation decodes at a reduced scale only while the picture stays >= this many times the
# resize target: the largest difference from a full-size decode is then one grey level on
# 3000x2250 photos and two on a 2001x1503 JPEG (at 1x: 2 for `Image.reduce`, 5 for JPEG draft).
EVAL_REDUCING_GAP = 3


def open_image(path: str, min_side: int) -> Image.Image:
    """Decode as RGB at a reduced scale whose shortest side stays >= min_side (see decode_reduced)."""
    return decode_reduced(path, min_side).image


def augment(image: Image.Image, aug: np.ndarray, size: int) -> np.ndarray:
    """Apply one augmentation row: random resized crop to size x size, rotate, flip, jitter -> uint8."""
    width, height = image.size
    area = float(aug[SCALE]) * width * height
    ratio = math.exp(float(aug[LOG_RATIO]))
    crop_w = min(width, max(1.0, math.sqrt(area * ratio)))
    crop_h = min(height, max(1.0, math.sqrt(area / ratio)))
    left = float(aug[U]) * (width - crop_w)
    top = float(aug[V]) * (height - crop_h)
    out = image.resize((size, size), Image.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
    if aug[ANGLE]:
        fill = tuple(int(c) for c in np.asarray(out).reshape(-1, 3).mean(0))
        out = out.rotate(float(aug[ANGLE]), resample=Image.BILINEAR, fillcolor=fill)
    pixels = np.asarray(out)
    if aug[HFLIP]:
        pixels = pixels[:, ::-1]
    if aug[VFLIP]:
        pixels = pixels[::-1]
    if aug[BRIGHT] != 1 or aug[CONTRAST] != 1 or aug[SATUR] != 1:
        pixels = color_jitter(pixels, float(aug[BRIGHT]), float(aug[CONTRAST]), float(aug[SATUR]))
    return np.ascontiguousarray(pixels)


def color_jitter(pixels: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """torchvision-style brightness, contrast and saturation factors on uint8 RGB."""
    x = pixels.astype(np.float32) * brightness
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - gray.mean()) * contrast + gray.mean()
    gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = (x - gray) * saturation + gray
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _text(array: np.ndarray) -> str:
    return array.tobytes().rstrip(b"\0").decode("utf-8", "replace")


def decode_batch(batch: dict) -> dict:
    """Stream batch -> record ids and captions as str lists; arrays stay NumPy."""
    out = dict(batch)
    for key in ("record_id", "caption", "image_path"):
        if key in out:
            out[key] = [_text(row) for row in out[key]]
    return out


def image_groups(items: Sequence[Item]) -> list[int]:
    """Per item, the position of the first item with the same image content: the manifest's
    `sha256` (fetch.py writes it), else the same image file."""
    first: dict[str, int] = {}
    return [first.setdefault(str(item.record.get("sha256") or item.image_path), i) for i, item in enumerate(items)]


@dataclass
class EvalSet:
    """Validation images with their deterministic captions and (optional) labels."""

    image_paths: list[str]
    captions: list[str]
    labels: list[str | None]
    groups: list[int] | None = None  # record groups (one image or object): image-to-image recall's hits
    images: list[str] | None = None  # each image's content (dataset.image_key): a copy is no other photo


class TrainStream:
    """Shuffled, augmented, prefetched training batches; `epoch(e)` is the same for the same e."""

    def __init__(self, items: Sequence[Item], captions: CaptionBuilder, tokenize: Callable,
                 processor: ImageProcessor, size: int, batch_size: int, seed: int,
                 augment: AugmentConfig | None = None, threads: int = 4, prefetch: int = 4,
                 caption_index: Sequence[int] | None = None, groups: Sequence[int] | None = None):
        """`groups`: each item's record group (data/groups.py; default: by image content);
        `caption_index`: each item's position in `captions`."""
        self.items = list(items)
        self.captions = captions
        self.caption_index = list(caption_index) if caption_index is not None else list(range(len(self.items)))
        self.tokenize = tokenize
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment or AugmentConfig()
        self.threads = threads
        self.prefetch = prefetch
        self.mean = np.asarray(processor.image_mean, np.float32)
        self.std = np.asarray(processor.image_std, np.float32)
        self.scale = np.float32(processor.rescale_factor if processor.do_rescale else 1.0)
        self.min_side = int(math.ceil(size / math.sqrt(self.augment.crop_min_area)))
        self.image_groups = list(groups) if groups is not None else image_groups(self.items)
        self._token_cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)

    def empty_batch(self) -> dict:
        """A batch of no rows shaped like this stream's, for a process whose share of a short
        global batch is empty (it still joins the step; needs `samples` to have run once)."""
        some_ids = next(iter(self._token_cache.values()))
        return {"pixels": np.zeros((0, self.size, self.size, 3), np.float32),
                "input_ids": np.zeros((0, some_ids.shape[0]), some_ids.dtype),
                "image_group": np.zeros(0, np.int64), "record_id": [], "caption": []}

    def samples(self, epoch: int) -> list[dict]:
        """The epoch's sample dicts in order, before images are loaded."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.items))
        captions = self.captions.draw([self.caption_index[i] for i in order], rng)
        augs = draw_augmentations(rng, len(order), self.augment)
        missing = [c for c in dict.fromkeys(captions) if c not in self._token_cache]
        if missing:
            for caption, ids in zip(missing, self.tokenize(missing)):
                self._token_cache[caption] = ids
        return [
            dict(index=np.array(int(i), np.int64),
                 record_id=self.items[i].record_id.encode("utf-8"),
                 caption=caption.encode("utf-8"),
                 input_ids=self._token_cache[caption],
                 image_path=str(self.items[i].image_path).encode("utf-8"),
                 image_group=np.array(self.image_groups[i], np.int64),
                 aug=aug)
            for i, caption, aug in zip(order, captions, augs)
        ]

    def _load(self, sample: dict) -> dict:
        sample = dict(sample)
        image = open_image(_text(sample["image_path"]), self.min_side)
        pixels = augment(image, sample["aug"], self.size)
        sample["pixels"] = (pixels.astype(np.float32) * self.scale - self.mean) / self.std
        return sample

    def epoch(self, epoch: int) -> Iterator[dict]:
        """Batches of the epoch: `pixels` (B, S, S, 3) float32, `input_ids`, `image_group`, `record_id`,
        `caption`, ..."""
        return self.batches(self.samples(epoch), self.batch_size)

    def batches(self, samples: list[dict], batch_size: int) -> Iterator[dict]:
        """Load, augment and batch the given sample dicts in order (the last batch may be short)."""
        if not samples:
            return
        buffer = dx.buffer_from_vector(samples)
        stream = buffer.sample_transform(self._load).batch(batch_size).ordered_prefetch(
            self.prefetch, self.threads)
        for batch in stream:
            yield decode_batch(batch)


class EvalStream:
    """Deterministic evaluation pixels (the core's ImageProcessor), decoded image by image on
    background threads (data/decode_threads.py's ordered_map, as the index does) and handed out in
    batches; large pictures decode at a reduced scale (EVAL_REDUCING_GAP).

    Each image on its own thread rather than each batch: an evaluation set of one or two batches
    (most validation sets) used one core for all its decoding before; 48 photos of 3000x2250
    decode at 19 images/s instead of 10 on 2 shared cores, to the same pixels (docs/evaluation.md)."""

    def __init__(self, image_paths: Sequence[str], processor: ImageProcessor, batch_size: int = 64,
                 threads: int = 4):
        self.image_paths = [str(p) for p in image_paths]
        self.processor = processor
        self.batch_size = batch_size
        self.threads = threads
        # Without a resize the pixels are used at their own scale, so nothing may be decoded smaller.
        self.min_side = processor.shortest_edge * EVAL_REDUCING_GAP if processor.do_resize else 0

    def pixels(self, path: str) -> np.ndarray:
        """One image file -> (H, W, 3) float32 pixels, as evaluation scores it."""
        if self.min_side:
            decoded = decode_reduced(path, self.min_side)
            image = self.processor.resize_and_crop(decoded.image, decoded.full_size, decoded.scale)
        else:
            image = self.processor.resize_and_crop(load_image(path))
        return self.processor.normalize(np.asarray(image))

    def __iter__(self) -> Iterator[dict]:
        """{"index", "image_path", "pixels"} batches in the paths' order; an unreadable image raises
        (evaluation images were checked before training: one failing now is an error)."""
        index, paths, pixels = [], [], []
        decoded = ordered_map(self.pixels, self.image_paths, self.threads, ahead=2 * self.batch_size)
        for number, (path, result) in enumerate(decoded):
            if isinstance(result, Exception):
                raise result
            index.append(number)
            paths.append(path)
            pixels.append(result)
            if len(index) == self.batch_size or number == len(self.image_paths) - 1:
                yield {"index": np.array(index, np.int64), "image_path": paths, "pixels": np.stack(pixels)}
                index, paths, pixels = [], [], []
