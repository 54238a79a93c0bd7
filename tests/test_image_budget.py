"""Memory from small files (issue 24): a picture's header is checked against the one pixel budget
before a pixel is decoded, everywhere images are read; a 1 x 100,000 picture resizes only the
region its centre crop keeps. Peak memory before/after: bench/bench_image_memory.py."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:  # transformers >= 5: the PIL backend by name
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:
    from transformers import CLIPImageProcessor

from mlx_clip.data.dataset import Item, check_images
from mlx_clip.data.image_files import ImageProblem, inspect_image
from mlx_clip.data.stream import decode_reduced
from mlx_clip.models.image_open import MAX_PIXELS, ImageTooLarge, check_pixels, open_image_bounded
from mlx_clip.models.preprocess import ImageProcessor, load_image


pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose PNG header claims width x height (the body is one empty row):
    refused from the header, it never gets as far as being found truncated."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


@pytest.fixture
def huge_png(tmp_path) -> Path:
    path = tmp_path / "scan.png"
    path.write_bytes(png_claiming(12000, 12000))  # 144 megapixels in ~70 bytes
    return path


def test_the_budget_admits_real_catalogue_photos_and_scans():
    check_pixels(8000, 6000, "camera.jpg")  # 48 MP camera file
    check_pixels(7016, 9921, "a3-600dpi.tif")  # A3 at 600 dpi, 70 MP
    assert MAX_PIXELS == 100_000_000
    with pytest.raises(ImageTooLarge, match=r"^scan.png: 12,000 x 12,000 pixels is over the pixel budget of 100 megapixels"):
        check_pixels(12000, 12000, "scan.png")


def test_fetch_refuses_a_picture_over_the_budget_from_its_header(huge_png):
    with pytest.raises(ImageProblem) as caught:
        inspect_image(huge_png.read_bytes())
    assert caught.value.reason == "too_large" and "12,000 x 12,000" in caught.value.detail


def test_embedding_and_streams_refuse_it_in_one_line_naming_the_file(huge_png):
    for read in (load_image, lambda p: decode_reduced(str(p), 672), lambda p: ImageProcessor()([p])):
        with pytest.raises(ImageTooLarge) as caught:
            read(huge_png)
        assert str(caught.value).startswith(f"{huge_png}: 12,000 x 12,000 pixels") and "\n" not in str(caught.value)
    with pytest.raises(ImageTooLarge, match="bytes"):  # the llm plugin and the index pass bytes
        open_image_bounded(huge_png.read_bytes())


def test_training_check_counts_pictures_over_the_budget(huge_png, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), "red").save(good)
    check = check_images([Item("a", good, {}), Item("b", huge_png, {})], threads=1)
    assert [item.record_id for item in check.kept] == ["a"] and check.too_large == 1
    assert check.line() == ("skipped 1 record: 0 missing, 0 unreadable image, 1 over 100 megapixels "
                            f"(first: record 'b' ({huge_png}))")


def test_llm_plugin_refuses_it_in_one_line(huge_png):
    from mlx_clip.llm_plugin import _decode_image, _Unreadable

    with pytest.raises(_Unreadable) as caught:  # embed_batch turns it into one line naming the item
        _decode_image(huge_png.read_bytes())
    assert "over the pixel budget" in str(caught.value) and "\n" not in str(caught.value)


def test_a_one_pixel_wide_picture_resizes_only_what_the_crop_keeps(tmp_path, monkeypatch):
    """1 x 100,000: the shortest-side resize alone would be 224 x 22,400,000 (15 GB)."""
    path = tmp_path / "line.png"
    Image.new("RGB", (1, 100_000), (200, 100, 50)).save(path)
    sizes = []
    real = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: sizes.append(size) or real(self, size, *a, **k))
    pixels = ImageProcessor()([path])
    assert pixels.shape == (1, 224, 224, 3)
    assert sizes and max(w * h for w, h in sizes) <= 224 * 224


@pytest.mark.parametrize("size", [(20, 3000), (3000, 7), (5, 2000)])
def test_the_crop_first_resize_is_within_one_grey_level_of_clip_image_processor(tmp_path, size):
    rng = np.random.default_rng(1)
    path = tmp_path / "long.png"
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    reference = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    with Image.open(path) as image:
        expected = reference(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    got = ImageProcessor.from_dict(reference.to_dict())([path])[0]
    assert np.abs(got - expected).max() <= 0.016  # one grey level is 1 / 255 / std ~ 0.015


def test_an_upright_rgb_picture_is_not_copied_on_its_way_to_the_model():
    """Each copy of a 100-megapixel decode is 300 MB: embedding one at the budget peaked at 1.2 GB
    with two needless copies, 0.44 GB without (bench/results/image_memory-after.json)."""
    from mlx_clip.models.image_open import to_rgb

    picture = Image.new("RGB", (40, 30), "red")
    assert to_rgb(picture) is picture
    turned = Image.new("RGB", (40, 30), "red")
    turned.getexif()[0x0112] = 6  # shown sideways: turned, so a new picture
    assert to_rgb(turned).size == (30, 40)


def test_a_header_past_pillows_own_bomb_limit_is_said_in_the_budgets_words():
    """Pillow refuses a header of over 179 megapixels before our check reads it: the line is ours."""
    from mlx_clip.models.image_open import open_image_bounded

    with pytest.raises(ImageTooLarge) as caught:
        open_image_bounded(png_claiming(60000, 60000), max_pixels=50_000_000)  # 3,600 megapixels
    assert str(caught.value) == ("the image (69 bytes): more than 179 megapixels is over the pixel budget of 50 "
                                 "megapixels; downscale the picture first")


def test_a_heic_photo_without_pillow_heif_says_what_reads_it(tmp_path, monkeypatch):
    """An iPhone photo (HEIC) was "not an image format Pillow can read": it now says that
    pillow-heif reads it (the `.[heic]` extra), from a file or an upload; other junk is unchanged."""
    from mlx_clip.errors import InputError
    from mlx_clip.models import image_open

    monkeypatch.setattr(image_open, "HEIF_READABLE", False)  # as installed without the extra
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(range(256)) * 8
    (tmp_path / "IMG_0001.HEIC").write_bytes(heic)
    for source in (tmp_path / "IMG_0001.HEIC", heic):
        with pytest.raises(InputError, match=r"a HEIC/HEIF picture \(an iPhone photo\?\).*pip install pillow-heif"):
            open_image_bounded(source)
    with pytest.raises(InputError, match="not an image format Pillow can read"):
        open_image_bounded(b"\x00\x00\x00\x18ftypisom" + bytes(64))  # an MP4 is no HEIC
    with pytest.raises(ImageProblem) as fetched:  # a catalogue's HEIC download: its failures.jsonl detail
        inspect_image(heic)
    assert fetched.value.reason == "not_an_image" and "pip install pillow-heif" in fetched.value.detail
