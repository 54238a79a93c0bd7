"""Pixel values equal transformers' CLIPImageProcessor (PIL backend) on real photos of varied sizes
and modes: the same 8-bit pixels, so the float values agree to float32 rounding."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

try:  # transformers >= 5: the PIL backend by name (CLIPImageProcessor uses torchvision when installed)
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # older transformers: CLIPImageProcessor is the PIL implementation
    from transformers import CLIPImageProcessor

from mlx_clip.errors import InputError
from mlx_clip.models.preprocess import ImageProcessor, load_image

SAMPLE_DATA = Path(matplotlib.get_data_path()) / "sample_data"
PHOTOS = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"]  # real photographs shipped with matplotlib


def _variants(tmp_path: Path) -> list[Path]:
    """Real photos at varied sizes and in every mode users' catalogues contain."""
    out = []
    for name in PHOTOS:
        photo = Image.open(SAMPLE_DATA / name).convert("RGB")
        for i, (w, h) in enumerate([(640, 480), (300, 900), (225, 224), (1000, 131), (97, 301), (224, 224)]):
            img = photo.resize((w, h), Image.LANCZOS)
            stem = f"{Path(name).stem}_{w}x{h}"
            path = tmp_path / f"{stem}.jpg"
            img.save(path, quality=90)
            out.append(path)
            mode_img = {
                0: img.convert("L"), 1: img.convert("P", palette=Image.ADAPTIVE), 2: img.convert("CMYK"),
                3: img.convert("LA"), 4: img.convert("RGBA"), 5: img.convert("1"),
            }[i]
            if mode_img.mode == "RGBA":  # real transparency: a see-through band
                alpha = np.full((h, w), 255, np.uint8)
                alpha[: h // 3] = 60
                mode_img.putalpha(Image.fromarray(alpha))
            ext = "jpg" if mode_img.mode == "CMYK" else "png"
            path = tmp_path / f"{stem}_{mode_img.mode}.{ext}"
            mode_img.save(path)
            out.append(path)
    return out


@pytest.fixture(scope="module")
def photo_paths(tmp_path_factory):
    return _variants(tmp_path_factory.mktemp("photos"))


@pytest.mark.parametrize("size", [224, 32])
def test_matches_clip_image_processor(photo_paths, size):
    reference = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    ours = ImageProcessor.from_dict(reference.to_dict(), image_size=size)
    assert len(photo_paths) >= 20
    for path in photo_paths:
        with Image.open(path) as image:
            expected = reference(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
        got = ours([path])[0]
        assert got.shape == expected.shape == (size, size, 3), path.name
        # One grey level is 1 / 255 / std ~ 0.015 after normalisation; 1e-6 leaves only float32
        # rounding of rescale-then-normalise (measured: <= 4.8e-7), so every pixel is the same.
        diff = np.abs(got - expected)
        assert diff.max() <= 1e-6, (path.name, diff.max())


def test_exif_orientation_applied(tmp_path):
    photo = Image.open(SAMPLE_DATA / PHOTOS[0]).convert("RGB").resize((320, 200))
    rotated = photo.transpose(Image.Transpose.ROTATE_90)  # what a camera stores, sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: stored turned 90 degrees counter-clockwise
    path = tmp_path / "sideways.jpg"
    rotated.save(path, exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.size == (320, 200)
    assert np.abs(np.asarray(loaded, np.float32) - np.asarray(photo, np.float32)).mean() < 4


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (64, 64, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert 120 < rgb[32, 0, 0] < 136  # mid-grey, not saturated white


def test_transparent_pixels_on_white(tmp_path):
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.asarray(load_image(image))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("content", [b"", b"<html>not found</html>", None])
def test_unreadable_image_is_one_line(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content is None:  # truncated JPEG
        Image.new("RGB", (64, 64), "red").save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(InputError) as err:
        ImageProcessor()([path])
    message = str(err.value)
    assert "\n" not in message and str(path) in message


def test_missing_image_is_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")
