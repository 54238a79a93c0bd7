"""Synthetic captioned image sets for fine-tuning tests: coloured shapes and id-coded colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(shape: str, colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 4, size // 2 - 2))
    cx, cy = (int(rng.integers(r + 1, size - r)) for _ in range(2))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def write_shapes(folder: Path, per_class: int = 20, seed: int = 0, size: int = 32) -> Path:
    """Coloured shapes with records {id, colour, shape, label}; returns manifest.jsonl."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    n = 0
    for _ in range(per_class):
        for colour, rgb in COLOURS.items():
            for shape in SHAPES:
                n += 1
                name = f"images/s{n:04d}.png"
                draw_shape(shape, rgb, rng, size).save(folder / name)
                lines.append({"id": f"s{n:04d}", "colour": colour, "shape": shape,
                              "label": f"{colour} {shape}", "image_path": name})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return manifest


def id_colour(k: int) -> tuple[int, int, int]:
    """A distinct solid colour for record k (< 216): 6 levels per channel, 51 apart."""
    return (k % 6 * 51, k // 6 % 6 * 51, k // 36 % 6 * 51)


def colour_id(rgb) -> int:
    r, g, b = (int(round(float(c) / 51)) for c in rgb)
    return r + 6 * g + 36 * b


def write_id_coded(folder: Path, count: int = 40, size: int = 48) -> Path:
    """Images of one solid colour that encodes the record number; varied sizes and modes."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(count):
        width, height = size + 7 * (k % 5), size + 5 * (k % 3)
        image = Image.new("RGB", (width, height), id_colour(k))
        name = f"images/id{k:03d}.png"
        if k % 4 == 1:
            image.convert("RGBA").save(folder / name)
        else:
            image.save(folder / name)
        lines.append({"id": f"rec{k:03d}", "title": f"object number {k}", "kind": "thing", "image_path": name})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return manifest
