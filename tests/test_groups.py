"""--group-field: several photos of one object never cross the split, count as positives in the
loss, and are the hits of image-to-image recall; identical captions are positives too."""

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx

import numpy as np
import pytest

from finetune_fixtures import COLOURS, SHAPES, draw_shape
import mlx_clip
from mlx_clip import finetune
from mlx_clip.settings import FinetuneConfig
from mlx_clip.data.dataset import crossing_groups, image_key, read_manifest, split
from mlx_clip.data.groups import join_groups, record_groups
from mlx_clip.data.stream import TrainStream
from mlx_clip.data.training_set import build_training_set
from mlx_clip.errors import InputError
from mlx_clip.train import scores
from mlx_clip.train.evaluate import i2i_metrics, i2i_ranks
from mlx_clip.train.loss import contrastive_loss, positives, sigmoid_loss


def write_catalogue(folder: Path, objects: int = 40) -> Path:
    """A museum-like manifest: object k has 1 + k % 4 photos (different pictures of one shape and
    colour), each record naming its object in `object_uri`; object 7's first photo is also filed
    under object 8 (the same file: equal sha256), joining the two."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    colours = list(COLOURS.items())
    for k in range(objects):
        colour, rgb = colours[k % len(colours)]
        shape = SHAPES[k // len(colours) % len(SHAPES)]
        for view in range(1 + k % 4):
            name = f"images/o{k:03d}-{view}.png"
            draw_shape(shape, rgb, rng).save(folder / name)
            lines.append({"id": f"o{k:03d}-{view}", "object_uri": f"https://museum.example/object/{k}",
                          "colour": colour, "shape": shape, "image_path": name, "sha256": f"{k}-{view}"})
    lines.append({**lines[[r["id"] for r in lines].index("o007-0")], "id": "o008-x",
                  "object_uri": "https://museum.example/object/8"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return manifest


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    return write_catalogue(tmp_path_factory.mktemp("catalogue"))


def test_images_and_group_field_join_transitively():
    """A record sharing an image with one object and the field with another joins all three."""
    images = ["a", "b", "b", "c", "d", "e"]
    objects = ["x", "x", "y", "y", None, None]  # records 4 and 5: no value, each its own group
    assert join_groups(6, images, objects) == [0, 0, 0, 0, 1, 2]
    assert join_groups(6, images) == [0, 1, 1, 2, 3, 4]  # images alone: today's groups


def test_no_object_crosses_the_split_and_split_json_can_tell(catalogue):
    config = FinetuneConfig(manifest=str(catalogue), group_field="object_uri", captions=["a {colour} {shape}"],
                            batch_size=4, val_fraction=0.2, test_fraction=None)
    resolved = build_training_set(config, lambda line: None).config
    assert config.test_fraction is None and resolved.test_fraction == 0.0  # resolved by replace, never mutated
    said = []
    data = build_training_set(replace(config, test_fraction=0.2), said.append)
    side = {}
    for name, index in (("train", data.train_index), ("val", data.val_index), ("test", data.test_index)):
        for i in index:
            side[data.items[i].record["object_uri"]] = side.get(data.items[i].record["object_uri"], set()) | {name}
    assert all(len(sides) == 1 for sides in side.values())
    assert len(data.test_index) > 0 and len(data.val_index) > 0
    groups = data.split_ids["groups"]
    assert not crossing_groups(data.split_ids)
    joined = next(g for g in groups if "o008-x" in g)  # object 7 and 8, joined by one shared file
    assert set(joined) == {"o007-0", "o007-1", "o007-2", "o007-3", "o008-0", "o008-x"}
    assert "101 records in 39 objects (--group-field object_uri): 1-6 records each, median 3" in said
    assert data.split_line.endswith("; each object's records (--group-field object_uri) stay on one side")
    home = next(name for name in ("train", "val", "test") if "o008-x" in data.split_ids[name])
    other = "val" if home != "val" else "train"
    moved = dict(data.split_ids, **{home: [r for r in data.split_ids[home] if r != "o008-x"],
                                    other: data.split_ids[other] + ["o008-x"]})
    assert crossing_groups(moved) == [joined]  # a split.json where one record moved sides is caught
    # without the field the same catalogue splits object photos apart (what --group-field fixes)
    plain = split(data.items, 0.2, seed=0, test_fraction=0.2)
    sides = {}
    for name, part in (("train", plain.train), ("val", plain.val), ("test", plain.test)):
        for item in part:
            sides.setdefault(item.record["object_uri"], set()).add(name)
    assert any(len(s) > 1 for s in sides.values())
    assert "object" not in plain.line()  # no --group-field: only images are kept together


def test_a_group_field_no_record_has_is_one_line(catalogue):
    with pytest.raises(InputError, match=r"--group-field 'object_url': no record has this field"):
        build_training_set(FinetuneConfig(manifest=str(catalogue), group_field="object_url", batch_size=4),
                           lambda line: None)
    assert FinetuneConfig.from_dict({"group_field": "object_uri"}).group_field == "object_uri"


def test_i2i_recall_queries_other_images_of_the_group():
    """Each image queries the others (itself excluded); only images with another of their group are queries."""
    embeds = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], np.float32)
    groups = [0, 0, 1, 2, 3]  # images 2, 3 and 4 have no other image of their group
    ranks = i2i_ranks(embeds, groups)
    assert ranks[:2].tolist() == [1, 1] and np.isnan(ranks[2:]).all()  # NaN: not a query
    groups = [0, 1, 0, 1, 2]  # partners far apart: 0 <-> 2 and 1 <-> 3, image 4 a lone one (no query)
    ranks = i2i_ranks(embeds, groups)
    assert ranks[:4].tolist() == [4, 3, 4, 3] and np.isnan(ranks[4])  # image 0: 1 (.9), 4 (.7) and 3 (.1) score above its partner 2 (0)
    metrics = i2i_metrics(ranks)
    assert metrics["i2i_queries"] == 4 and metrics["i2i_R@1"] == 0 and metrics["i2i_R@5"] == 1
    assert metrics["i2i_mean_rank"] == 3.5
    details = SimpleNamespace(ranks={"i2t": np.ones(5), "t2i": np.ones(5), "i2i": ranks}, captions=list("abcde"),
                              caption_of_image=np.arange(5), zero_shot=None)
    assert len(scores.intervals(details)["i2i_R@1_ci95"]) == 2  # the one bootstrap, over the 4 queries
    none = i2i_metrics(i2i_ranks(embeds, [0, 1, 2, 3, 4]))
    assert none["i2i_queries"] == 0 and "i2i_R@1" not in none and "skipped" in none["i2i_note"]
    # a copy of the query's own picture (same content) is neither its hit nor ranked above one
    copies = np.array([[1, 0], [1, 0], [0.6, 0.8], [0.8, 0.6], [0, 1]], np.float32)
    ranks = i2i_ranks(copies, [0, 0, 0, 1, 1], images=["p", "p", "q", "r", "s"])
    assert ranks.tolist() == [2, 2, 3, 4, 2]  # 0 and 1 find 2 behind 3 (.8 > .6), never each other (1.0)
    alone = i2i_ranks(copies[:2], [0, 0], images=["p", "p"])
    assert np.isnan(alone).all()  # two copies of one picture: no query at all


def test_i2i_is_scored_only_where_an_image_can_have_a_partner(tmp_path):
    """Every record alone (no --group-field, no shared image): image-to-image recall asks nothing,
    so an evaluation set carries no groups and the run says nothing of it; a group field whose
    objects have two photos makes it a question. Two records sharing one image do not: a copy is
    the same picture (a collapsed model, every image tied, scored 0 before and 1.000 after)."""
    records = [{"object": f"o{i // 2}"} for i in range(6)]
    assert not record_groups([f"img{i}" for i in range(6)], records).can_pair
    assert record_groups([f"img{i}" for i in range(6)], records, "object").can_pair
    assert not record_groups(["img0", "img0"] + [f"img{i}" for i in range(2, 6)], records).can_pair
    assert not record_groups(["a", "a", "b", "b", "c", "c"], records, "object").can_pair  # each object one picture
    from PIL import Image

    (tmp_path / "images").mkdir()
    rows = []
    for i in range(40):  # 40 different pictures, two records per object
        Image.fromarray(np.full((8, 8, 3), (i * 6, 255 - i * 6, i), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        rows.append({"id": f"r{i}", "object_uri": f"o{i // 2}", "title": f"thing {i}", "image_path": f"images/{i}.png"})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = FinetuneConfig(manifest=str(tmp_path / "manifest.jsonl"), captions=["{title}"], batch_size=4,
                            val_fraction=0.25, test_fraction=0.25)
    alone = build_training_set(config, lambda line: None)  # every record its own image, no --group-field
    assert alone.test_set.groups is None and alone.val_set.groups is None
    grouped = build_training_set(replace(config, group_field="object_uri"), lambda line: None)
    assert grouped.test_set.groups is not None and grouped.val_set.groups is not None
    from mlx_clip.run.console import table_columns  # the epoch table: no column of dashes

    assert [title for _, title in table_columns(alone)][-2:] == ["i2t rank", "t2i rank"]
    labelled = build_training_set(replace(config, group_field="object_uri", label_field="title"), lambda line: None)
    assert [title for _, title in table_columns(labelled)][-2:] == ["0-shot", "i2i@1"]


def test_run_reports_i2i_recall_and_keeps_objects_apart(tiny_hf, catalogue, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert finetune.main(["--model", str(tiny_hf), "--manifest", str(catalogue), "--runs-dir", str(runs),
                          "--caption", "a {colour} {shape}", "--batch-size", "8", "--no-progress", "--name", "g",
                          "--epochs", "1", "--group-field", "object_uri", "--val-fraction", "0.2",
                          "--test-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "records in 39 objects (--group-field object_uri)" in out
    assert "image-to-image recall@1" in out and "i2i@1" in out
    metrics = json.loads((runs / "g" / "metrics.json").read_text())
    for row in (metrics["history"][0], metrics["history"][-1], metrics["test"]["before"], metrics["test"]["after"]):
        assert 0 <= row["i2i_R@1"] <= row["i2i_R@5"] <= 1 and row["i2i_queries"] > 0 and "i2i_mean_rank" in row
    split_json = json.loads((runs / "g" / "split.json").read_text())
    assert split_json["groups"] and not crossing_groups(split_json)
    config = json.loads((runs / "g" / "config.json").read_text())
    assert config["group_field"] == "object_uri"
    captions = json.loads((runs / "g" / "captions.json").read_text())  # the caption check, printed and kept
    assert captions["distinct_captions"] == 12 and captions["top_repeated"][0]["images"] > 1
    assert "caption check: 12 distinct captions" in out and captions["warning"] in out


def test_equal_captions_as_positives_softmax_needs_it_not():
    """Two entries with one caption: in the softmax loss, marking them positives (a second column of
    `groups`) gives exactly the plain loss (their text columns are equal); in the sigmoid loss it
    would remove a contradiction (why it is not switched on: train/loss.py's docstring)."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 8)).astype(np.float32)
    texts = rng.standard_normal((6, 8)).astype(np.float32)
    texts[3] = texts[1]  # entries 1 and 3 carry the same caption
    logits = mx.array(images @ texts.T * 3)
    records = mx.array([0, 1, 2, 3, 4, 5])
    with_captions = mx.array([[0, 10], [1, 11], [2, 12], [3, 11], [4, 14], [5, 15]])
    assert abs(float(contrastive_loss(logits, records)) - float(contrastive_loss(logits, with_captions))) < 1e-5
    # sigmoid: scores that answer every pair right (columns 1 and 3 equal, as equal texts make them)
    # give a loss near 0 once equal captions are positives; as negatives, the two pairs cost 2 x 10 / 6 rows
    right = mx.where(positives(with_captions), 10.0, -10.0)
    assert float(sigmoid_loss(right, with_captions)) < 1e-3 < 3.3 < float(sigmoid_loss(right, records))
    union = mx.array([0, 1, 2, 1, 4, 5])  # the same positives written as one group column
    assert abs(float(sigmoid_loss(logits, with_captions)) - float(sigmoid_loss(logits, union))) < 1e-6
    either = mx.array([[0, 10], [0, 11], [2, 11], [3, 13], [4, 14], [5, 15]])  # 0~1 by object, 1~2 by caption
    mask = np.array(positives(either))
    assert mask[0, 1] and mask[1, 2] and not mask[0, 2]  # "either column": not a chain


def test_stream_carries_the_record_groups(catalogue, tiny_hf):
    """The batch's image_group is the record group: one number per object (objects 7 and 8 joined)."""
    model = mlx_clip.load(str(tiny_hf))
    config = FinetuneConfig(manifest=str(catalogue), group_field="object_uri", captions=["a {colour} {shape}"],
                            batch_size=8, val_fraction=0.2, test_fraction=0.2)
    data = build_training_set(config, lambda line: None)
    stream = TrainStream([data.items[i] for i in data.train_index], data.captions, model.tokenizer,
                         model.image_processor, 32, 8, 0, caption_index=data.train_index,
                         groups=data.group_of(data.train_index))
    rows = [(rid, int(group)) for batch in stream.epoch(1) for rid, group in zip(batch["record_id"], batch["image_group"])]
    uri = {item.record_id: item.record["object_uri"] for item in data.items}
    by_object = {}
    for rid, group in rows:
        by_object.setdefault(uri[rid], set()).add(group)
    assert all(len(ids) == 1 for ids in by_object.values())
    objects = {uri[r] for r, _ in rows}
    joined = {"https://museum.example/object/7", "https://museum.example/object/8"} <= objects
    assert len({g for _, g in rows}) == len(objects) - joined
    assert record_groups([image_key(i) for i in read_manifest(catalogue)[:2]], [{}, {}]).count == 2
