"""The training stream never separates an image from its record id and caption."""

import json

import numpy as np

from finetune_fixtures import colour_id, write_id_coded
from mlx_clip.data.captions import CaptionBuilder
from mlx_clip.data.dataset import read_manifest
from mlx_clip.models.preprocess import ImageProcessor
from mlx_clip.data.stream import AugmentConfig, EvalStream, TrainStream, augment, draw_augmentations, open_image

TEMPLATES = ["{title}", "a {kind} called {title}", "{title}, a {kind}"]


def fake_tokenize(texts):
    """Token ids that encode the caption's bytes, so ids can be checked against captions."""
    out = np.zeros((len(texts), 77), np.int32)
    for i, text in enumerate(texts):
        data = list(text.encode())[:77]
        out[i, :len(data)] = data
    return out


def _stream(tmp_path, augment_config, batch_size=7, count=40):
    manifest = write_id_coded(tmp_path, count=count)
    items = read_manifest(manifest)
    captions = CaptionBuilder(TEMPLATES, [item.record for item in items])
    processor = ImageProcessor.from_dict({}, 24)
    return items, TrainStream(items, captions, fake_tokenize, processor, 24, batch_size, seed=3,
                              augment=augment_config, threads=3, prefetch=3)


def _decode_ids(pixels, processor):
    """Record number of each image from its (solid) colour; the centre survives rotation."""
    rgb = pixels * np.asarray(processor.image_std, np.float32) + np.asarray(processor.image_mean, np.float32)
    centre = rgb[:, 8:16, 8:16].reshape(len(rgb), -1, 3) * 255
    return [colour_id(np.median(c, axis=0)) for c in centre]


def test_every_augmentation_keeps_image_and_record_together(tmp_path):
    config = AugmentConfig(crop_min_area=0.3, hflip=True, vflip=True, rotate=30.0, color_jitter=0.0)
    items, stream = _stream(tmp_path, config)
    processor = ImageProcessor.from_dict({}, 24)
    seen_captions = set()
    for epoch in range(1, 4):
        order = []
        sizes = []
        for batch in stream.epoch(epoch):
            sizes.append(len(batch["record_id"]))
            assert batch["pixels"].shape == (sizes[-1], 24, 24, 3)
            decoded = _decode_ids(batch["pixels"], processor)
            expected = [int(r[3:]) for r in batch["record_id"]]
            assert decoded == expected
            for k, record_id, caption, ids, index in zip(expected, batch["record_id"], batch["caption"],
                                                         batch["input_ids"], batch["index"]):
                assert items[int(index)].record_id == record_id
                assert f"object number {k}" in caption
                assert bytes(ids[ids > 0].astype(np.uint8)).decode() == caption
                seen_captions.add(caption)
            order.extend(expected)
        assert sizes == [7, 7, 7, 7, 7, 5]  # the partial final batch is kept
        assert sorted(order) == list(range(40))  # each record once per epoch
        assert order != list(range(40))  # shuffled
    assert len(seen_captions) > 40  # several templates drawn


def test_epochs_are_reproducible_and_differ(tmp_path):
    config = AugmentConfig(crop_min_area=0.3, vflip=True, rotate=20.0, color_jitter=0.3)
    _, stream = _stream(tmp_path, config, batch_size=16, count=20)
    first = [b["pixels"] for b in stream.epoch(1)]
    again = [b["pixels"] for b in stream.epoch(1)]
    other = [b["pixels"] for b in stream.epoch(2)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other))


def test_augment_crops_flips_and_jitters():
    from PIL import Image
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3)))
    rng = np.random.default_rng(0)
    row = draw_augmentations(rng, 1, AugmentConfig(crop_min_area=1.0, crop_ratio=(1.0, 1.0), hflip=False))[0]
    plain = augment(image, row, 32)
    row[4] = 1  # horizontal flip
    np.testing.assert_array_equal(augment(image, row, 32), plain[:, ::-1])
    assert plain[0, 0, 0] < plain[0, -1, 0]
    jitter = draw_augmentations(rng, 1, AugmentConfig(color_jitter=0.5))[0]
    assert not np.array_equal(augment(image, jitter, 32), augment(image, np.r_[jitter[:7], 1, 1, 1], 32))


def test_eval_stream_matches_image_processor(tmp_path):
    manifest = write_id_coded(tmp_path, count=5)
    paths = [str(item.image_path) for item in read_manifest(manifest)]
    processor = ImageProcessor.from_dict({}, 24)
    batches = list(EvalStream(paths, processor, batch_size=2, threads=2))
    assert [len(b["image_path"]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b["pixels"] for b in batches]), processor(paths))


def _write_asymmetric(folder, count=24):
    """Images no flip or rotation maps onto themselves: red grows rightwards, green downwards,
    and a dark arrow points up-left; each record's is shifted and sized differently."""
    from PIL import Image, ImageDraw

    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(count):
        width, height = 56 + 5 * (k % 4), 44 + 3 * (k % 5)
        x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
        rgb = np.stack([x * 230, y * 230, np.full_like(x, 40 + 8 * k)], -1).astype(np.uint8)
        image = Image.fromarray(rgb)
        ImageDraw.Draw(image).polygon([(6, 6), (26, 10), (10, 26)], fill=(10, 10, 10))
        name = f"images/a{k:03d}.png"
        image.save(folder / name)
        lines.append({"id": f"rec{k:03d}", "title": f"object number {k}", "kind": "thing", "image_path": name,
                      "sha256": f"{k // 2:064x}" if k < 4 else f"{k:064x}"})  # records 0+1, 2+3 share an image
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return manifest


ALL_ON = AugmentConfig(crop_min_area=0.3, hflip=True, vflip=True, rotate=30.0, color_jitter=0.4)


def _asymmetric_stream(manifest, seed):
    items = read_manifest(manifest)
    captions = CaptionBuilder(TEMPLATES, [item.record for item in items])
    return TrainStream(items, captions, fake_tokenize, ImageProcessor.from_dict({}, 24), 24, 5, seed=seed,
                       augment=ALL_ON, threads=3, prefetch=3)


def test_every_augmentation_is_the_seeded_draw(tmp_path):
    """With asymmetric images and crop, both flips, rotation and jitter on, two streams with one
    seed give bitwise the same pixels, each image being exactly its drawn row applied; another
    seed gives other pixels. A draw made at load time (say a flip from unseeded randomness)
    differs between the two streams."""
    manifest = _write_asymmetric(tmp_path)
    first, second, other = (_asymmetric_stream(manifest, seed) for seed in (5, 5, 6))
    for epoch in (1, 2):
        a, b, c = ([x["pixels"] for x in s.epoch(epoch)] for s in (first, second, other))
        np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
        assert not np.array_equal(np.concatenate(a), np.concatenate(c))
        samples = first.samples(epoch)
        augs = np.stack([s["aug"] for s in samples])
        for column in (4, 5):  # both flips drawn both ways
            assert 0 < augs[:, column].sum() < len(augs)
        assert np.ptp(augs[:, 6]) > 10 and np.ptp(augs[:, 7:10]) > 0.2  # rotation and jitter vary
        for sample, got in zip(samples, np.concatenate(a)):
            image = open_image(sample["image_path"].decode(), first.min_side)
            expected = (augment(image, sample["aug"], 24).astype(np.float32) * first.scale - first.mean) / first.std
            np.testing.assert_array_equal(got, expected)
            for column in (4, 5):  # each flip draw changes the image (none maps onto itself)
                flipped = sample["aug"].copy()
                flipped[column] = 1 - flipped[column]
                assert not np.array_equal(augment(image, flipped, 24), augment(image, sample["aug"], 24))


def test_records_sharing_an_image_share_its_group(tmp_path):
    """The manifest's sha256 decides which batch entries the loss counts as positives."""
    stream = _asymmetric_stream(_write_asymmetric(tmp_path), 5)
    assert stream.image_groups == [0, 0, 2, 2] + list(range(4, 24))
    groups = {}
    for batch in stream.epoch(1):
        for record_id, group in zip(batch["record_id"], batch["image_group"]):
            groups[record_id] = int(group)
    assert groups == {f"rec{k:03d}": stream.image_groups[k] for k in range(24)}
