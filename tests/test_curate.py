"""The curator's CSVs on a built case: three emoji, twelve slightly different copies of each with
their label, plus a planted duplicate, a planted mislabel and an unlabelled record."""

from __future__ import annotations

import csv
import re
import shutil

import numpy as np
import pytest

import mlx_clip
from mlx_clip.search import main
from mlx_clip.train.evaluate import class_embeddings
from mlx_clip.use.curate import spreadsheet_cell
from mlx_clip.use.neighbours import nearest_neighbours, similar_pairs, top_k_rows
from mlx_clip.use.vector_search import read_collections
from search_fixtures import EMOJI, variants, write_collection

GROUPS = {"fruit": "1f34e", "animal": "1f436", "face": "1f600"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_hf):
    folder = tmp_path_factory.mktemp("curate")
    records = []
    for label, stem in GROUPS.items():
        for i, path in enumerate(variants(EMOJI / "images" / f"{stem}.png", folder / "images", stem, 13)):
            records.append({"id": f"{label}-{i}", "name": f"=HYPERLINK(\"x\") {label} {i}", "label": label,
                            "image_path": str(path)})
    planted = {"mislabel": "fruit-12", "unlabelled": "face-12", "duplicate": ("animal-0", "animal-copy")}
    next(r for r in records if r["id"] == "fruit-12")["label"] = "animal"  # an apple labelled animal
    next(r for r in records if r["id"] == "face-12")["label"] = ""  # no label
    copy = folder / "images" / "copy-of-animal-0.png"
    shutil.copyfile(folder / "images" / "1f436-0.png", copy)  # the same file under another record
    records.append({"id": "animal-copy", "name": "dog again", "label": "animal", "image_path": str(copy)})
    write_collection(folder / "index.db", "finds", tiny_hf, records, label_field="label")
    out = folder / "out"
    assert main([str(folder / "index.db"), "--curate", str(out), "--threshold", "0.9999"]) == 0
    read = {name: list(csv.DictReader(open(out / name, encoding="utf-8-sig"))) for name in
            ("duplicates.csv", "suggestions.csv", "suspects.csv")}
    return {"rows": read, "planted": planted, "index": folder / "index.db", "model": tiny_hf, "records": records}


def test_a_planted_duplicate_is_found(built):
    rows = built["rows"]["duplicates.csv"]
    pairs = [(r["record_id_a"], r["record_id_b"]) for r in rows]
    assert built["planted"]["duplicate"] in pairs
    found = rows[pairs.index(built["planted"]["duplicate"])]
    assert float(found["similarity"]) >= 0.9999 and found["same_file"] == "yes"
    assert all(r["same_file"] == "" for r in rows if (r["record_id_a"], r["record_id_b"]) != built["planted"]["duplicate"])
    scores = [float(r["similarity"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.9999


def test_a_planted_mislabel_is_a_suspect(built):
    rows = built["rows"]["suspects.csv"]
    assert rows and rows[0]["record_id"] == built["planted"]["mislabel"]
    assert rows[0]["label"] == "animal" and rows[0]["neighbours_say"] == "fruit"
    assert float(rows[0]["share_of_neighbours_agreeing"]) == 0.0
    assert rows[0]["zero_shot_margin"] != ""  # the second opinion is there (a random model's: not asserted)
    assert not [r for r in rows if r["record_id"].split("-")[0] == r["label"]]  # no correctly labelled copy


def test_an_unlabelled_record_gets_three_suggestions_from_the_labels_in_use(built):
    rows = built["rows"]["suggestions.csv"]
    assert [r["record_id"] for r in rows] == [built["planted"]["unlabelled"]]
    row = rows[0]
    labels = [row[f"label_{n}"] for n in (1, 2, 3)]
    assert sorted(labels) == ["animal", "face", "fruit"]
    scores = [float(row[f"score_{n}"]) for n in (1, 2, 3)]
    assert scores == sorted(scores, reverse=True)
    # the scores are the image's cosine with each label's prompt, computed here independently
    model = mlx_clip.load(built["model"])
    found = read_collections([built["index"]])[0]
    prompts = class_embeddings(model, labels, "a photo of {label}")
    assert scores == pytest.approx((prompts @ found.vector_of(row["record_id"])).tolist(), abs=1e-4)


def test_titles_that_would_run_as_formulas_are_quoted(built):
    assert built["rows"]["suspects.csv"][0]["title"].startswith("'=HYPERLINK")
    assert spreadsheet_cell("-1") == "-1" and spreadsheet_cell("-x") == "'-x" and spreadsheet_cell("@a") == "'@a"


def test_blocked_neighbours_and_pairs_equal_the_full_matrix():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(70, 8)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix[50] = matrix[3]
    full = matrix @ matrix.T
    index, scores = nearest_neighbours(matrix, 5, block=16)
    np.fill_diagonal(full, -np.inf)
    assert (index != np.arange(70)[:, None]).all()  # never its own neighbour, even beside its identical twin
    assert np.take_along_axis(full, index.astype(np.int64), axis=1) == pytest.approx(scores)
    assert scores == pytest.approx(-np.sort(-full, axis=1)[:, :5])  # ties may come in either order
    pairs, passing = similar_pairs(matrix, 0.6, 1000, block=16)
    upper = [(full[i, j], i, j) for i in range(70) for j in range(i + 1, 70) if full[i, j] >= 0.6]
    assert [(i, j) for _, i, j in pairs] == [(i, j) for _, i, j in sorted(upper, key=lambda t: (-t[0], t[1], t[2]))]
    assert passing == len(upper) > 3
    assert similar_pairs(matrix, 0.6, 3, block=16) == (pairs[:3], passing)  # bounded: the most similar kept
    assert pairs[0][1:] == (3, 50)


def test_a_collapsed_model_keeps_the_earliest_of_tied_pairs_and_counts_every_pair():
    """Every vector the same (a model that maps everything to one point): all pairs tie at 1.0;
    the list keeps max_pairs of them in (i, j) order, block by block, and the count is all of them."""
    matrix = np.ones((40, 4), dtype=np.float32) / 2
    pairs, passing = similar_pairs(matrix, 0.95, 25, block=7)
    assert passing == 40 * 39 // 2
    expected = [(i, j) for i in range(40) for j in range(i + 1, 40)][:25]
    assert [(i, j) for _, i, j in pairs] == expected
    assert all(score == pytest.approx(1.0) for score, _, _ in pairs)


def test_a_full_duplicates_list_takes_only_what_beats_it_and_matches_the_whole_sort():
    """Once max_pairs are held, a block adds only pairs above the list's lowest (no partition of it):
    20 pictures, 6 copies of each, with noise, give pairs tied at 1.0 and others near it; the list
    equals the first max_pairs of all pairs sorted by (-similarity, i, j)."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(20, 6)).astype(np.float32)
    matrix = np.repeat(base, 6, axis=0) + np.where(np.arange(120)[:, None] % 3 == 0, 0.0,
                                                   rng.normal(scale=0.05, size=(120, 6))).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    full = matrix @ matrix.T
    everything = sorted(((full[i, j], i, j) for i in range(120) for j in range(i + 1, 120) if full[i, j] >= 0.5),
                        key=lambda t: (-t[0], t[1], t[2]))
    for max_pairs in (7, 50, 400):
        pairs, passing = similar_pairs(matrix, 0.5, max_pairs, block=9)
        assert passing == len(everything) > max_pairs
        assert [(i, j) for _, i, j in pairs] == [(i, j) for _, i, j in everything[:max_pairs]], max_pairs


def _suggestion_scores(out, model_folder, prompt):
    """The unlabelled record's three scores as written, and as computed here with `prompt`."""
    row = next(csv.DictReader(open(out / "suggestions.csv", encoding="utf-8-sig")))
    labels = [row[f"label_{n}"] for n in (1, 2, 3)]
    written = [float(row[f"score_{n}"]) for n in (1, 2, 3)]
    model = mlx_clip.load(model_folder)
    found = read_collections([out.parent / "index.db"])[0]
    return written, (class_embeddings(model, labels, prompt) @ found.vector_of(row["record_id"])).tolist()


def test_suggestions_use_the_prompt_the_model_was_fine_tuned_with(built, tmp_path, capsys):
    """A run's model/ (an old run: the card does not say, config.json does), a model folder copied
    away from its run (its card says, written as finetune writes it: an ensemble here), and an
    explicit --label-prompt, which wins."""
    import json

    from mlx_clip.outputs.card_info import CardInfo
    from mlx_clip.outputs.model_card import write_model_card

    run = tmp_path / "runs" / "finds"
    shutil.copytree(built["model"], run / "model")
    (run / "config.json").write_text(json.dumps({"label_prompt": "an emoji showing {label}"}))
    ensemble = ["a {label} emoji", "a drawing of a {label}"]
    copied = tmp_path / "copied"
    shutil.copytree(built["model"], copied)
    (tmp_path / "other_run").mkdir()
    (tmp_path / "other_run" / "config.json").write_text(json.dumps({"label_prompt": ensemble, "epochs": 1}))
    write_model_card(copied, CardInfo.from_run(tmp_path / "other_run"))  # what finish.py does for model/
    cases = [(run / "model", [], "an emoji showing {label}", f"from {run / 'config.json'}"),
             (copied, [], ensemble, f"from {copied / 'README.md'}"),
             (copied, ["--label-prompt", "a {label}"], "a {label}", "given by --label-prompt"),
             (built["model"], [], "a photo of {label}", "the default")]
    for number, (model, flags, prompt, why) in enumerate(cases):
        folder = tmp_path / f"case{number}"
        folder.mkdir()
        write_collection(folder / "index.db", "finds", model, built["records"], label_field="label")
        assert main([str(folder / "index.db"), "--curate", str(folder / "out"), *flags]) == 0
        said = capsys.readouterr().out
        shown = prompt if isinstance(prompt, str) else " | ".join(prompt)
        assert f"finds: labels scored with the prompt {shown!r} (" in said and why in said, said
        written, expected = _suggestion_scores(folder / "out", model, prompt)
        assert written == pytest.approx(expected, abs=1e-4)
        if prompt != "a photo of {label}":
            assert written != pytest.approx(_suggestion_scores(folder / "out", model, "a photo of {label}")[1],
                                             abs=1e-4)


def test_a_recorded_label_prompt_is_taken_only_when_usable(tmp_path):
    """A model folder may come from someone else: a prompt without {label}, a mapping, a card too
    large to be a card, or broken front matter records nothing (the default is used)."""
    from mlx_clip.outputs.label_prompt import MAX_FILE_BYTES, recorded_label_prompt

    folder = tmp_path / "model"
    folder.mkdir()
    card = folder / "README.md"
    assert recorded_label_prompt(folder) is None
    card.write_text("---\nlabel_prompt: a photo of {label}\n---\n# card\n")
    assert recorded_label_prompt(folder) == ("a photo of {label}", str(card))
    for front in ("label_prompt: no placeholder", "label_prompt: {a: 1}", "label_prompt: [1, 2]",
                  "label_prompt: [", "label_prompt: &a [*a]"):
        card.write_text(f"---\n{front}\n---\n")
        assert recorded_label_prompt(folder) is None, front
    card.write_text("---\nlabel_prompt: a {label}\n---\n" + "x" * MAX_FILE_BYTES)
    assert recorded_label_prompt(folder) is None
    assert recorded_label_prompt(tmp_path / "missing") is None


def test_a_list_cut_by_max_pairs_is_said_with_how_many_pairs_passed(built, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(built["index"]), "--curate", str(out), "--threshold", "0.5", "--max-pairs", "3"]) == 0
    said = capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "duplicates.csv", encoding="utf-8-sig")))
    assert len(rows) == 3
    line = next(line for line in said.splitlines() if "pairs at or above similarity 0.5" in line)
    assert int(line.split(": ")[1].split(" pairs")[0].replace(",", "")) > 3
    assert "duplicates.csv keeps the 3 most similar" in line


def test_a_model_that_tells_no_image_apart_is_said_not_read_as_duplicates(built, tmp_path, capsys):
    assert main([str(built["index"]), "--curate", str(tmp_path / "a"), "--threshold", "0.9999"]) == 0
    assert "hardly tells these images apart" not in capsys.readouterr().out  # one planted pair among 40 records
    assert main([str(built["index"]), "--curate", str(tmp_path / "b"), "--threshold", "0.3"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "hardly tells" in line)
    passing = int(re.match(r"warning: finds: ([\d,]+) of its 780 pairs \(\d+%\) are at or above similarity 0.3:",
                           line).group(1).replace(",", ""))
    assert passing >= 78  # a tenth of the 40 records' 780 pairs


@pytest.mark.parametrize("case", ["spread", "ties", "collapsed", "few columns"])
def test_each_rows_top_k_is_the_full_sorts_first_k(case):
    """The chunk-maximum floor path (spread), the whole-row path (a collapsed model's ties, and rows
    shorter than k chunks) both give each row's k largest, best first, ties by the earlier column."""
    rng = np.random.default_rng(3)
    sims = {"spread": rng.normal(size=(40, 3000)), "ties": np.round(rng.normal(size=(40, 3000)), 0),
            "collapsed": np.ones((40, 6000)), "few columns": rng.normal(size=(40, 300))}[case].astype(np.float32)
    sims[np.arange(40), np.arange(40)] = -np.inf
    index, score = top_k_rows(sims, 10)
    expected = np.lexsort((np.broadcast_to(np.arange(sims.shape[1]), sims.shape), -sims), axis=1)[:, :10]
    assert np.array_equal(index, expected)
    assert np.array_equal(score, np.take_along_axis(sims, expected, axis=1))
