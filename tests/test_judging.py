"""The judging side: one bootstrap, metric names in one place, the verdict's words, retention and WiSE-FT."""

import ast
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

import mlx_clip
from mlx_clip.train.verdict import verdict
from mlx_clip.train import metric_names, scores
from mlx_clip.train.bootstrap import bootstrap_ci, words_for
from mlx_clip.train.evaluate import ZeroShot
from mlx_clip.train.metric_names import I2I_R1, MEAN_R1, ZERO_SHOT, ci_key
from mlx_clip.train.wise_ft import mixed, pick

PACKAGE = Path(mlx_clip.__file__).parent


def _details(i2t, t2i, captions, of_image, correct=None, i2i=None):
    ranks = {"i2t": np.asarray(i2t), "t2i": np.asarray(t2i)}
    if i2i is not None:
        ranks["i2i"] = np.asarray(i2i, dtype=float)
    zero_shot = None
    if correct is not None:
        truth = np.zeros(len(correct), dtype=int)
        zero_shot = ZeroShot(["a", "b"], np.arange(len(correct)), truth, np.where(correct, 0, 1))
    return SimpleNamespace(ranks=ranks, captions=list(captions), caption_of_image=np.asarray(of_image),
                           zero_shot=zero_shot)


def test_an_interval_depends_on_the_items_not_their_order():
    """finetune scores the test set in split order, compare in record-id order: the same interval."""
    rng = np.random.default_rng(0)
    hits = rng.random(150) < 0.3
    assert bootstrap_ci(hits) == bootstrap_ci(rng.permutation(hits))
    i2t, t2i = rng.integers(1, 12, 150), rng.integers(1, 12, 90)
    captions = [f"c{i}" for i in range(90)]
    one = _details(i2t, t2i, captions, np.arange(150) % 90)
    order, corder = rng.permutation(150), rng.permutation(90)
    other = _details(i2t[order], t2i[corder], [captions[j] for j in corder], (np.arange(150) % 90)[order])
    assert scores.intervals(one) == scores.intervals(other)


def test_paired_change_pairs_items_by_key_in_any_order():
    """The same images, listed in another order by the second run: still paired image by image."""
    rng = np.random.default_rng(1)
    before_ranks = rng.integers(1, 4, 120)
    after_ranks = before_ranks.copy()
    after_ranks[np.flatnonzero(before_ranks > 1)[:20]] = 1  # 20 images fixed, none broken
    ids = [f"r{i}" for i in range(120)]
    captions = [f"c{i}" for i in range(120)]
    before = _details(before_ranks, before_ranks, captions, np.arange(120))
    after = _details(after_ranks, after_ranks, captions, np.arange(120))
    order = rng.permutation(120)
    shuffled = _details(after_ranks[order], after_ranks[order], [captions[j] for j in order], np.arange(120))
    for key in ("i2t_R@1", MEAN_R1):
        same = scores.change(before, after, key, ids, ids)
        assert scores.change(before, shuffled, key, ids, [ids[j] for j in order]) == same
        assert same[1][0] > 0  # only gains: a paired interval above 0


def test_mean_recall_on_a_handful_of_images_counts_images_not_images_plus_captions():
    """12 images and their 12 captions are 12 paired items, so a mean recall@1 change on them has
    no words; 20 images have."""
    for n, words in ((12, "too few to tell"), (20, "better")):
        before = _details(np.full(n, 3), np.full(n, 3), [f"c{i}" for i in range(n)], np.arange(n))
        after = _details(np.ones(n, int), np.ones(n, int), [f"c{i}" for i in range(n)], np.arange(n))
        change, interval, items = scores.change(before, after, MEAN_R1)
        assert items == n and words_for(interval, items) == words


def test_no_module_spells_a_metric_key_but_metric_names():
    """Issue 25: `mean_R@1` was spelled 24 times in 6 files; now every reader and writer names the constants."""
    keys = set(metric_names.SCORE_KEYS) | set(metric_names.RANK_KEYS)
    keys |= {ci_key(k) for k in metric_names.SCORE_KEYS}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "metric_names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in keys:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert not found, found


def test_words_follow_the_interval_never_the_point():
    assert words_for([0.001, 0.05]) == "better"
    assert words_for([0.0, 0.05]) == "not distinguishable"  # touching 0 is not a difference
    assert words_for([-0.05, 0.0]) == "not distinguishable"
    assert words_for([-0.10, -0.02]) == "worse"


def test_verdict_flags_a_zero_shot_and_retention_regression_and_says_a_retrieval_gain():
    n = 200
    captions = [f"c{i}" for i in range(n)]
    before = _details(np.full(n, 3), np.full(n, 3), captions, np.arange(n), correct=np.ones(n, bool),
                      i2i=np.full(n, 2.0))
    gain = np.where(np.arange(n) < 120, 1, 3)  # 60 % of the images now first
    worse = np.arange(n) >= 40  # zero-shot: 40 of 200 now wrong
    i2i = np.where(np.arange(n) % 2 == 0, 1.0, 2.0)
    i2i[:10] = np.nan  # images without another of their group are left out
    after = _details(gain, gain, captions, np.arange(n), correct=worse, i2i=i2i)
    kept = {"kept_percent": 91.0, "out_of_domain": True, "scores": {ZERO_SHOT: {
        "measure": "image → its category, zero-shot accuracy", "change": -0.05, ci_key("change"): [-0.08, -0.02],
        "words": "worse"}}}
    judged = verdict(before, after, "test", n, kept)
    by_key = {f["key"]: f for f in judged["findings"]}
    assert by_key[MEAN_R1]["words"] == "better" and not by_key[MEAN_R1]["regression"]
    assert by_key[ZERO_SHOT]["words"] == "worse" and by_key[ZERO_SHOT]["regression"]
    assert by_key[I2I_R1]["words"] == "better"
    assert judged["regressions"] == ["zero-shot tagging", "retention"]
    line = judged["line"]
    assert line.startswith("Fine-tuning helped retrieval: +0.600 mean recall@1 [") and "on 200 test images" in line
    assert "zero-shot tagging got worse: -0.200 [" in line and "it kept 91 % of the base model" in line
    assert "forgetting is measurable" in line


def test_verdict_has_no_words_for_a_handful_of_items():
    """Two query images that all became first give an interval of [+1, +1]: too few to tell, not 'improved'."""
    n = 200
    captions = [f"c{i}" for i in range(n)]
    i2i_before, i2i_after = np.full(n, np.nan), np.full(n, np.nan)
    i2i_before[:2], i2i_after[:2] = 5.0, 1.0
    before = _details(np.full(n, 3), np.full(n, 3), captions, np.arange(n), i2i=i2i_before)
    after = _details(np.full(n, 3), np.full(n, 3), captions, np.arange(n), i2i=i2i_after)
    judged = verdict(before, after, "test", n)
    found = {f["key"]: f for f in judged["findings"]}[I2I_R1]
    assert found["ci95"] == [1.0, 1.0] and found["words"] == "too few to tell" and found["items"] == 2
    assert "image-to-image search: too few to tell (2 scored items" in judged["line"]
    assert "image-to-image search improved" not in judged["line"]
    from mlx_clip.outputs.report.judging import verdict_section
    assert "image-to-image search (recall@1): +1.000, too few to tell (2 items)" in verdict_section({"verdict": judged}, [])

    from mlx_clip.outputs.report import change_cell, paired_change  # the tables follow the same rule
    few, many = (change_cell(paired_change(before, after, key)).html for key in (I2I_R1, MEAN_R1))
    assert "too few to tell (2 items)" in few and 'class="up"' not in few and "too few" not in many
    assert "[" not in few and "[" in many  # no interval on a handful, in the change or the scores
    from mlx_clip.outputs.report import score_cells
    scored = {I2I_R1: 1.0, ci_key(I2I_R1): [1.0, 1.0], MEAN_R1: 0.5, ci_key(MEAN_R1): [0.4, 0.6]}
    assert score_cells(scored, scored, I2I_R1, paired_change(before, after, I2I_R1)) == ("1.000", "1.000")
    assert score_cells(scored, scored, MEAN_R1, paired_change(before, after, MEAN_R1))[1] == "0.500 [0.400, 0.600]"
    assert words_for([1.0, 1.0], 19) == "too few to tell" and words_for([1.0, 1.0], 20) == "better"  # compare's too


def test_verdict_in_red_at_the_top_of_the_report():
    from mlx_clip.outputs.report.judging import verdict_section

    n = 100
    captions = [f"c{i}" for i in range(n)]
    before = _details(np.full(n, 2), np.full(n, 2), captions, np.arange(n), correct=np.ones(n, bool))
    after = _details(np.full(n, 2), np.full(n, 2), captions, np.arange(n), correct=np.arange(n) >= 50)
    html = verdict_section({"verdict": verdict(before, after, "test", n)}, [])
    assert '<li class="down"><strong>zero-shot tagging (accuracy): -0.500' in html
    assert "retrieval (mean recall@1): +0.000 [+0.000, +0.000], not distinguishable" in html


def test_wise_ft_mixes_weights_and_picks_by_rule():
    base, tuned = {"w": mx.zeros((2,)), "only": mx.ones((1,))}, {"w": mx.full((2,), 4.0), "only": mx.ones((1,))}
    assert mixed(base, tuned, 0.25)["w"].tolist() == [1.0, 1.0]
    assert mixed(base, tuned, 0.0)["w"].tolist() == [0.0, 0.0] and mixed(base, tuned, 1.0)["w"].tolist() == [4.0, 4.0]
    points = [{"alpha": 0.0, MEAN_R1: 0.20, "retention_percent": 100.0},
              {"alpha": 0.5, MEAN_R1: 0.40, "retention_percent": 97.0},
              {"alpha": 1.0, MEAN_R1: 0.45, "retention_percent": 80.0}]
    assert pick(points, "gain")[0]["alpha"] == 1.0
    chosen, why = pick(points, "balanced")
    assert chosen["alpha"] == 0.5 and "95 %" in why
    low = [dict(p, retention_percent=r) for p, r in zip(points, (60.0, 55.0, 40.0))]  # none keeps 95 %
    chosen, why = pick(low, "balanced")
    assert chosen["alpha"] == 0.0 and "no mix keeps" in why
    at_chance = [dict(p, retention_at_chance=True) for p in low]  # shares of chance-level scores: not weighed
    chosen, why = pick(at_chance, "balanced")
    assert chosen["alpha"] == 1.0 and "retention not measurable" in why


def test_retention_scores_the_bundled_emoji_and_caches_the_base(tmp_path):
    from mlx_clip.train.retention import retention, retention_set

    chosen = retention_set(40)
    assert len(chosen.ids) == 40 and len(set(chosen.eval_set.labels)) >= 5  # spread over the categories
    calls = []

    class Fake:
        """A 'model' that embeds an image by its row of a fixed random matrix: image i matches name i."""

        def __init__(self, noise):
            self.noise = noise

        def embed_texts(self, texts):
            return np.stack([_vec(t) for t in texts])

    def _vec(text):
        return np.random.default_rng(abs(hash(text)) % 2**32).normal(size=16)

    pytest.importorskip("mlx")
    from mlx_clip.train import retention as module

    def fake_evaluate(model, eval_set, prompt, details=True, threads=4):
        calls.append(model.noise)
        n = len(eval_set.image_paths)
        rng = np.random.default_rng(7)
        i2t = np.where(rng.random(n) < (0.9 - model.noise), 1, 5)
        correct = rng.random(n) < (0.8 - model.noise)
        return {}, _details(i2t, i2t, eval_set.captions, np.arange(n), correct)

    original = module.evaluate
    module.evaluate = fake_evaluate
    try:
        first = retention(Fake(0.3), lambda: Fake(0.0), "base-x", 40, tmp_path, trained_records=[])
        second = retention(Fake(0.3), lambda: Fake(0.0), "base-x", 40, tmp_path, trained_records=[{"name": n} for n in chosen.names])
    finally:
        module.evaluate = original
    assert calls == [0.0, 0.3, 0.3]  # the base model was scored once, then read from the cache
    assert first["out_of_domain"] and "note" not in first
    assert 0 < first["kept_percent"] < 100 and first["scores"]["i2t_R@1"]["words"] == "worse"
    assert first["scores"] == second["scores"]
    assert not second["out_of_domain"] and "not out-of-domain" in second["note"]


def test_retention_from_a_base_model_at_chance_says_so_instead_of_a_share(monkeypatch):
    """A random base model finds no name and guesses the category: 'kept 217 %' of that means nothing,
    so the verdict and the report say it is not measurable."""
    from mlx_clip.outputs.report.judging import retention_section, verdict_section
    from mlx_clip.train.verdict import verdict
    from mlx_clip.train import retention as module

    def fake_evaluate(model, eval_set, prompt, details=True, threads=4):
        n = len(eval_set.image_paths)
        ranks = np.full(n, 5 if model == "base" else 1)
        correct = (np.arange(n) % 2 == 0) if model == "base" else np.ones(n, bool)  # 2 classes: half is chance
        return {}, _details(ranks, ranks, eval_set.captions, np.arange(n), correct)

    monkeypatch.setattr(module, "evaluate", fake_evaluate)
    kept = module.retention("tuned", lambda: "base", "base-x", 40, None)
    assert kept["at_chance"] and all(s["at_chance"] for s in kept["scores"].values())
    assert kept["scores"]["zero_shot_acc"]["chance"] == 0.5 and kept["kept_percent"] > 100
    assert "scores at chance on image → its name, recall@1 and image → its category" in kept["chance_note"]
    judged = verdict(None, None, "test", 40, retention=kept)
    assert "kept" in judged["line"] and "not measurable: the base model scores at chance" in judged["line"]
    assert "%" not in judged["line"]
    assert "retention: not measurable" in verdict_section({"verdict": judged}, [])
    section = retention_section({"retention": kept})
    assert section.count(">not measurable (base at chance)<") == 2 and " %<" not in section  # no share of chance
    from mlx_clip.outputs.card_judging import judging_lines

    card = "\n".join(judging_lines({"retention": kept}))
    assert card.count("no share kept: the base is at chance") == 2 and "% kept" not in card


@pytest.fixture(scope="module")
def wise_run(tiny_hf, shapes_manifest, tmp_path_factory):
    """A trained run exported as the a = 0 mix: model/ must hold the base model's weights."""
    from mlx_clip import finetune

    runs = tmp_path_factory.mktemp("wise")
    import io
    from contextlib import redirect_stdout

    printed = io.StringIO()
    with redirect_stdout(printed):
        code = finetune.main(["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(runs),
                              "--name", "w", "--caption", "a {colour} {shape}", "--label-field", "label",
                              "--test-fraction", "0.25", "--batch-size", "32", "--epochs", "3", "--lr", "2e-3",
                              "--retention-images", "60", "--wise-ft", "0,0.5,1", "--wise-ft-pick", "balanced",
                              "--no-progress"])
    assert code == 0
    return runs / "w", printed.getvalue()


def test_wise_ft_exports_the_picked_mix_and_says_why(wise_run, tiny_hf):
    import json

    from mlx.utils import tree_flatten

    from mlx_clip.models.clip import load

    folder, printed = wise_run
    metrics = json.loads((folder / "metrics.json").read_text())
    mix = metrics["wise_ft"]
    assert [p["alpha"] for p in mix["points"]] == [0.0, 0.5, 1.0] and mix["picked_on"] == "validation"
    assert all(p["retention_percent"] is not None for p in mix["points"])
    assert mix["points"][0]["retention_percent"] == pytest.approx(100.0)  # a = 0 is the base model itself
    base = dict(tree_flatten(load(tiny_hf, dtype="float32").parameters()))
    saved = dict(tree_flatten(load(folder / "model", dtype="float32").parameters()))
    if mix["alpha"] == 0.0:
        assert all(np.allclose(np.array(saved[k]), np.array(base[k]), atol=1e-6) for k in base)
    else:
        assert not all(np.allclose(np.array(saved[k]), np.array(base[k]), atol=1e-6) for k in base)
    kept_point = next(p for p in mix["points"] if p["alpha"] == mix["alpha"])
    from mlx_clip.train.retention import retention  # the saved model is the kept mix: the same retention

    again = retention(load(folder / "model", dtype="float32"), None, str(tiny_hf), 60, folder.parent / ".cache")
    assert again["kept_percent"] == pytest.approx(kept_point["retention_percent"])
    assert metrics["retention"]["kept_percent"] == pytest.approx(kept_point["retention_percent"])
    assert f"kept a = {mix['alpha']:g}" in printed
    if all(p["retention_at_chance"] for p in mix["points"]):  # the tiny base model: a share would say nothing
        mixes = [line for line in printed.splitlines() if line.startswith("wise-ft a = ")]
        assert len(mixes) == 3 and all(line.endswith("retention not measurable (the base model scores at chance "
                                                     "on the bundled emoji)") for line in mixes), mixes
    assert (folder / "wise_ft.png").stat().st_size > 10_000
    report = (folder / "report.html").read_text()
    assert f"WiSE-FT: the kept mix a = {mix['alpha']:g}" in report and report.count("data:image/png;base64,") == 3
    if all(p["retention_at_chance"] for p in mix["points"]):
        at_chance = sum(bool(s.get("at_chance")) for s in metrics["retention"]["scores"].values())
        assert report.count(">not measurable (base at chance)<") == 3 + at_chance  # its cells, the retention table's
    card = (folder / "model" / "README.md").read_text()
    assert f"a = {mix['alpha']:g}" in card and "WiSE-FT" in card


def test_the_verdict_is_one_sentence_in_console_card_and_report(wise_run):
    import html
    import json

    folder, printed = wise_run
    metrics = json.loads((folder / "metrics.json").read_text())
    judged = metrics["verdict"]
    assert judged["set"] == "test" and judged["size"] == metrics["test"]["size"]
    assert f"verdict (held-out test set): {judged['line']}" in printed
    assert judged["line"] in (folder / "model" / "README.md").read_text()
    report = (folder / "report.html").read_text()
    assert html.escape(judged["line"]) in report
    assert report.index("<h2>Verdict") < report.index("<h2>Held-out test set") < report.index("<h2>Validation")
    assert metrics["retention"]["size"] == 60 and "kept" in judged["line"]


def test_recall_plot_scales_to_the_scores_and_their_intervals():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlx_clip.outputs.plots import recall_axes

    history = [{"epoch": e, "i2t_R@1": 0.02 + 0.01 * e, "i2t_R@1_ci95": [0.01 * e, 0.05 + 0.01 * e]} for e in range(4)]
    fig, ax = plt.subplots()
    recall_axes(ax, history)
    low, high = ax.get_ylim()
    plt.close(fig)
    assert low == 0 and 0.08 <= high < 0.2  # every line would sit on the floor of a 0-1 axis


def test_wise_ft_settings_from_flags_and_config_files(tiny_hf, shapes_manifest, tmp_path, capsys):
    from mlx_clip import finetune
    from mlx_clip.settings import FinetuneConfig

    config = FinetuneConfig.from_dict({"wise_ft": [0, 0.5, 1], "wise_ft_pick": "balanced"})
    assert config.wise_ft == [0, 0.5, 1] and config.to_dict()["wise_ft_pick"] == "balanced"
    base = ["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path), "--no-progress"]
    with pytest.raises(SystemExit) as stop:
        finetune.main(base + ["--wise-ft", "0,1.5"])
    assert stop.value.code == 2 and "every mixing weight must be in [0, 1]" in capsys.readouterr().err
    assert finetune.main(base + ["--wise-ft", "default", "--wise-ft-pick", "balanced", "--retention-images", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--retention-images" in err[0]


def test_the_verdict_compares_the_test_set_else_validation_else_nothing():
    """train/judging.py's Judging.compared(): the held-out test set whenever there is one (never
    validation, which picked the epoch), else validation's before and after, else nothing."""
    from mlx_clip.train.judging import Judging

    val_b, val_a, test_b, test_a = (_details([1, 2], [1, 2], ["x", "y"], [0, 1]) for _ in range(4))
    with_test = Judging(final=None, test={"size": 7}, val_before=val_b, val_after=val_a, val_size=2,
                        test_before=test_b, test_after=test_a)
    assert with_test.compared() == (test_b, test_a, "test", 7)
    validation = Judging(final=None, val_before=val_b, val_after=val_a, val_size=2)
    assert validation.compared() == (val_b, val_a, "validation", 2)
    assert Judging(final=None, val_after=val_a, val_size=2).compared() == (None, None, "validation", 0)
