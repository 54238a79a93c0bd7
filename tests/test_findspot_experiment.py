"""bench/findspot_experiment.py end to end on a tiny synthetic catalogue (coloured shapes given
made-up findspots) and a tiny random CLIP: three runs on one split, compare's paired table with
image-to-image and text-to-image recall, and the place's token cost. It proves the mechanics only:
the figures of a random model on shapes say nothing about whether a findspot helps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_clip.data.place_captions import VARIANTS, place_templates, token_cost
from mlx_clip.models.tokenizer import CLIPTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import findspot_experiment  # noqa: E402

SITES = {"red": ("Knossos", 35.2980, 25.1632), "green": ("Corinth", 37.9061, 22.8781),
         "blue": ("Athens", 37.9715, 23.7257), "yellow": ("Olympia", 37.6384, 21.6297)}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """72 shapes in 36 objects (two photos each); each colour found at one site; 3 records without coordinates."""
    from finetune_fixtures import write_shapes

    manifest = write_shapes(tmp_path_factory.mktemp("finds"), per_class=6)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    for n, record in enumerate(lines):
        site, lat, lon = SITES[record["colour"]]
        record.update(object_uri=f"obj{n // 2}", findspot=site, lat=round(lat + n * 1e-4, 6), lon=round(lon - n * 1e-4, 6))
        if n % 25 == 3:
            del record["lat"]  # unplaced: the coordinates caption simply has none
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return manifest


def argv(catalogue, tiny_hf, runs, *extra):
    return ["--model", str(tiny_hf), "--manifest", str(catalogue), "--runs-dir", str(runs), "--name", "fs",
            "--caption", "a {colour} {shape}", "--place-field", "findspot", "--lat-field", "lat", "--lon-field", "lon",
            "--label-field", "label", "--label-prompt", "a {label}", "--group-field", "object_uri",
            "--val-fraction", "0.2", "--test-fraction", "0.3", "--epochs", "1", "--batch-size", "16",
            "--lr", "1e-3", "--warmup", "0", "--no-progress", *extra]


def test_three_runs_on_one_split_and_a_paired_table(catalogue, tiny_hf, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert findspot_experiment.main(argv(catalogue, tiny_hf, runs)) == 0
    printed = capsys.readouterr().out
    folders = [runs / f"fs-{v}" for v in VARIANTS]
    captions = [json.loads((f / "config.json").read_text())["captions"] for f in folders]
    assert captions == [["a {colour} {shape}"], ["a {colour} {shape}, found at {findspot}"],
                        ["a {colour} {shape}, found at {lat:.4f}, {lon:.4f}"]]
    splits = [json.loads((f / "split.json").read_text()) for f in folders]
    assert splits[0]["test"] == splits[1]["test"] == splits[2]["test"] and splits[0]["test"]  # ONE split
    result = json.loads((runs / "fs-compare" / "compare.json").read_text())
    assert [Path(r["run"]).name for r in result["runs"]] == [f"fs-{v}" for v in VARIANTS]
    for row in result["runs"][1:]:  # paired differences from the no-place run, i2i and t2i among them
        for key in ("i2i_R@1", "t2i_R@1", "zero_shot_acc"):
            assert "diff_ci95" in row["metrics"][key], key
    assert "i2i_R@1" in printed and "t2i_R@1" in printed and "difference from fs-no-place" in printed
    assert "72 records; 72 name a place (findspot); 69 of 72 records have coordinates (lat, lon)" in printed
    # the same queries (the no-place test captions) for every run's model: the no-place run scores as in compare
    shared = json.loads((runs / "fs-compare" / "same_queries.json").read_text())
    assert [Path(r["run"]).name for r in shared["runs"]] == [f"fs-{v}" for v in VARIANTS]
    for key in ("i2t_R@1", "t2i_R@1", "t2i_R@5"):
        assert shared["runs"][0]["metrics"][key]["value"] == result["runs"][0]["metrics"][key]["value"], key
        assert "diff_ci95" in shared["runs"][2]["metrics"][key]
    assert "zero_shot_acc" not in shared["runs"][0]["metrics"]  # caption-free scores are compare's, not repeated
    # the coordinates run's row, recomputed here through the public API: its model, the test images, no-place queries
    import mlx_clip
    import numpy as np

    by_id = {r["id"]: r for r in map(json.loads, catalogue.read_text().splitlines())}
    test = [by_id[i] for i in splits[0]["test"]]
    queries = sorted({f"a {r['colour']} {r['shape']}" for r in test})
    model = mlx_clip.load(folders[2] / "model")
    similarity = model.embed_texts(queries) @ model.embed_images([str(catalogue.parent / r["image_path"]) for r in test]).T
    caption_of = np.array([queries.index(f"a {r['colour']} {r['shape']}") for r in test])
    correct = caption_of[None, :] == np.arange(len(queries))[:, None]  # (queries, images)
    t2i = ((similarity >= np.where(correct, similarity, -np.inf).max(1, keepdims=True)) & ~correct).sum(1) + 1
    i2t = ((similarity.T >= np.where(correct.T, similarity.T, -np.inf).max(1, keepdims=True)) & ~correct.T).sum(1) + 1
    for direction, ranks in (("t2i", t2i), ("i2t", i2t)):
        for k in (1, 5, 10):
            got = shared["runs"][2]["metrics"][f"{direction}_R@{k}"]["value"]
            assert got == pytest.approx(float(np.mean(ranks <= k)), abs=1e-9), (direction, k)
    cost = json.loads((runs / "fs-compare" / "token_cost.json").read_text())
    assert cost["captions"] == 72 and cost["context_length"] == 77
    assert cost["coordinates"]["median_added"] > cost["place-name"]["median_added"] >= 2  # ", found at X"
    # run again: the finished runs are reused, nothing trains
    assert findspot_experiment.main(argv(catalogue, tiny_hf, runs)) == 0
    assert capsys.readouterr().out.count("already finished with this caption; reused") == 3


def test_bad_input_is_one_line_before_any_training(catalogue, tiny_hf, tmp_path, capsys):
    records = [json.loads(line) for line in catalogue.read_text().splitlines()]
    records[5]["colour"] = records[5]["shape"] = ""  # no caption without the place
    holed = catalogue.parent / "holed.jsonl"
    holed.write_text("".join(json.dumps(r) + "\n" for r in records))
    cases = [(argv(catalogue, tiny_hf, tmp_path, "--place-field", "site"), "--place-field 'site': no record has this field"),
             (argv(catalogue, tiny_hf, tmp_path, "--lat-field", "latt"), "--lat-field 'latt': no record has this field"),
             (argv(holed, tiny_hf, tmp_path), "holed.jsonl: line 6: 1 of 72 records has no caption without the place"),
             (argv(catalogue, tiny_hf, tmp_path, "--caption", "{shape}"), "give one --caption without the place"),
             (argv(catalogue, tiny_hf, tmp_path, "--dry-run"), "--dry-run is not for the experiment")]
    for args, expected in cases:
        code, printed = findspot_experiment.main(args), capsys.readouterr()
        assert code == 2 and printed.err.count("\n") == 1 and printed.err.startswith("error: ") and expected in printed.err, \
            (expected, printed.err)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "findspot_experiment.py"), *cases[0][0]],
                          capture_output=True, text=True, timeout=300)  # and as a command
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and cases[0][1] in done.stderr
    assert not (tmp_path / "fs-no-place").exists()  # nothing started


def test_coordinates_cost_many_more_clip_tokens_than_a_place_name(openai_vocab):
    """The real CLIP BPE (OpenAI's vocabulary, shipped in open-clip-torch): digits split into pieces."""
    tokenizer = CLIPTokenizer.from_folder(openai_vocab)
    records = [{"what": "bronze coin", "findspot": "Athens", "lat": 37.9715, "lon": 23.7257},
               {"what": "bronze coin", "findspot": "Knossos", "lat": "35.298", "lon": "25.1632"}]  # strings, as in a CSV
    templates = place_templates("{what}", "findspot", "lat", "lon", decimals=4)
    cost = token_cost(records, templates, tokenizer.count_tokens, tokenizer.context_length)
    assert cost.tokens["no-place"] == [4, 4]  # start, "bronze", "coin", end
    words = 3  # ", found at": ",", "found", "at"
    assert cost.added("place-name") == [words + 1, words + 3]  # "athens"; "kno", "ss", "os"
    digits = 2 * (2 + 1 + 4) + 1  # CLIP's BPE splits every digit: "37" "." "9715" is 7 tokens, the comma 1
    # 18 of 77, for both: the CSV string "35.298" took {lat:.4f} as a number does ("35.2980", not 6 digits)
    assert cost.added("coordinates") == [words + digits] * 2


def test_the_token_bench_counts_coordinates_against_place_names(openai_vocab):
    """bench/bench_place_tokens.py's measurement (its figures are in docs/findspot.md), on 200 pairs."""
    import bench_place_tokens

    result = bench_place_tokens.measure(CLIPTokenizer.from_folder(openai_vocab), 200, 0)
    four = result["coordinates_tokens"]["4 decimals"]
    assert four["min"] > result["place_name_tokens"]["max"]  # the cheapest coordinates cost more than any name
    assert four["example"].count(".") == 2 and len(four["example"].split(", ")[1].split(".")[1]) == 4
    catalogue = result["catalogue"]
    assert catalogue["count"] == 1906 and catalogue["longest_no_place_caption_that_keeps_its_coordinates"] == 77 - 3 - four["median"]
    added = catalogue["caption_tokens"]["+ 4-decimal coordinates"]["median"] - catalogue["caption_tokens"]["no place"]["median"]
    assert added == 3 + four["median"]
