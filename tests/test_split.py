"""The three-way split: leak-free by image content, stratified, written to split.json; inputs
checked before any download; empty captions dropped."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mlx_clip import finetune
from mlx_clip.data.dataset import Item, fingerprint_of, split
from mlx_clip.errors import InputError


def _shared_image_items(n_images: int = 60, copies: int = 3) -> list[Item]:
    """Records where each image (sha256) belongs to 1..copies records, two labels."""
    items = []
    for k in range(n_images):
        for c in range(1 + k % copies):
            items.append(Item(f"r{k:03d}-{c}", None, {"sha256": f"img{k:03d}", "site": "A" if k % 3 else "B"}))
    return items


def test_no_image_sits_on_two_sides_and_strata_hold():
    items = _shared_image_items()
    parts = split(items, 0.2, seed=0, stratify="site", test_fraction=0.2)
    sides = [{i.record["sha256"] for i in side} for side in (parts.train, parts.val, parts.test)]
    assert not sides[0] & sides[1] and not sides[0] & sides[2] and not sides[1] & sides[2]
    assert len(parts.train) + len(parts.val) + len(parts.test) == len(items)
    assert (len(sides[1]), len(sides[2])) == (12, 12)  # fractions of the 60 distinct images
    for side in sides[1:]:  # one image in three is from site B, on every side
        assert Counter("B" if int(s[3:]) % 3 == 0 else "A" for s in side)["B"] == 4
    assert parts.shared_images == 40 and parts.shared_records == 20 * 2 + 20 * 3
    again = split(list(reversed(items)), 0.2, seed=0, stratify="site", test_fraction=0.2)
    assert again.ids()["fingerprint"] == parts.ids()["fingerprint"]
    assert parts.ids()["fingerprint"] == fingerprint_of(sorted(i.record_id for i in parts.test))


def test_path_records_without_sha256_are_grouped_by_file_content(tmp_path):
    """Two files with the same bytes under different names are one image."""
    items = []
    for k in range(20):
        image = Image.new("RGB", (8, 8), (k * 10, 0, 0))
        for c in range(2):
            path = tmp_path / f"f{k}-{c}.png"
            image.save(path)
            items.append(Item(f"r{k}-{c}", path, {"file": str(path)}))
    parts = split(items, 0.25, seed=1, test_fraction=0.25)
    stems = [{i.record_id.split("-")[0] for i in side} for side in (parts.train, parts.val, parts.test)]
    assert sum(map(len, stems)) == 20 and parts.shared_images == 20
    assert "40 records share 20 images" in parts.line()


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (0.0, 1.0), (0.9, 0.2)])
def test_fractions_that_leave_no_training_data_are_refused(val, test):
    with pytest.raises(InputError, match="no training data|must be in"):
        split(_shared_image_items(), val, seed=0, test_fraction=test)


def _args(tiny_hf, manifest, runs, *extra):
    return ["--model", str(tiny_hf), "--manifest", str(manifest), "--runs-dir", str(runs),
            "--caption", "a {colour} {shape}", "--batch-size", "16", "--no-progress", *extra]


def _one_line(capsys, argv) -> str:
    assert finetune.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_fractions_are_checked_before_any_work(tmp_path, capsys):
    line = _one_line(capsys, ["--data", str(tmp_path / "nope.json"), "--val-fraction", "0.5",
                              "--test-fraction", "0.5", "--model", str(tmp_path / "no-model")])
    assert "--test-fraction 0.5" in line and "no training data" in line


def test_run_writes_split_and_held_out_test_figures(tiny_hf, shapes_manifest, tmp_path, capsys):
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--name", "t", "--epochs", "1",
                               "--test-fraction", "0.25", "--label-field", "label")) == 0
    out = capsys.readouterr().out
    run = tmp_path / "t"
    ids = json.loads((run / "split.json").read_text())
    assert len(ids["test"]) == 48 and len(ids["val"]) == 19 and len(ids["train"]) == 192 - 48 - 19
    assert not set(ids["test"]) & (set(ids["train"]) | set(ids["val"]))
    assert ids["fingerprint"] == fingerprint_of(ids["test"])
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["size"] == 48 and test["fingerprint"] == ids["fingerprint"]
    for row in (test["before"], test["after"]):
        low, high = row["mean_R@1_ci95"]
        assert row["val_size"] == 48 and low <= row["mean_R@1"] <= high
    assert "held-out test (48 images" in out and "48 test" in out
    card = (run / "model" / "README.md").read_text()
    assert "held-out test set (48 images)" in card
    assert np.load(run / "eval_test.npz", allow_pickle=True)["i2t_ranks"].shape == (48,)
    assert "Held-out test set (n = 48)" in (run / "report.html").read_text()


def test_small_sets_get_no_test_set_by_default(tiny_hf, shapes_manifest, tmp_path, capsys):
    """192 records: 10 % would be 19 test images (< 20), so validation gives the figures, said so."""
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--dry-run")) == 0
    assert "no test set (--test-fraction" in capsys.readouterr().out


def test_records_with_empty_captions_are_dropped_and_counted(tiny_hf, shapes_manifest, tmp_path, capsys):
    lines = [json.loads(line) for line in shapes_manifest.read_text().splitlines()]
    for record in lines[:10]:
        record["colour"] = record["shape"] = record["label"] = ""  # nor a default caption
    for record in lines:
        record["image_path"] = str(shapes_manifest.parent / record["image_path"])
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert finetune.main(_args(tiny_hf, manifest, tmp_path, "--name", "e", "--epochs", "0")) == 0
    assert "dropped 10 records whose caption is empty" in capsys.readouterr().out
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["resolved"]["records"] == 182 and config["resolved"]["dropped_empty_captions"] == 10


@pytest.mark.parametrize("extra, expected", [
    (["--caption", "a {colour} {shpe}"], "'shpe'"),
    (["--label-field", "labl"], "--label-field 'labl'"),
    (["--sample", "20", "--batch-size", "32"], "--batch-size 32 is larger than the sample's training split (of 20 records, before any image fails), which has 1"),
])
def test_record_checks_come_before_any_download(shapes_manifest, tmp_path, capsys, extra, expected):
    """Records whose images would be downloaded (unreachable URLs): the error comes first, nothing fetched."""
    records = [{**json.loads(line), "url": f"http://127.0.0.1:9/{k}.png"}
               for k, line in enumerate(shapes_manifest.read_text().splitlines())]
    for record in records:
        record.pop("image_path")
    data = tmp_path / "records.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "fetched"
    argv = ["--data", str(data), "--out", str(out), "--model", str(tmp_path / "no-model"),
            "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--caption", "a {colour} {shape}", *extra]
    line = _one_line(capsys, argv)
    assert expected in line, line
    assert not out.exists()
