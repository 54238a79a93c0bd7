"""Recall@k and mean rank on hand-built similarity matrices (ties and duplicate captions included),
non-finite embeddings refused, collapsed embeddings scored at or below chance, zero-shot rules."""

import json

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from mlx_clip import finetune
import mlx_clip
from mlx_clip.train.evaluate import (
    EvalSet,
    NonFiniteEmbeddings,
    class_embeddings,
    evaluate,
    pessimistic_argmax,
    retrieval_metrics,
    retrieval_ranks,
)


def scored(similarity, caption_of_image):
    """Metrics of a hand-built (images x distinct captions) similarity matrix: caption embeddings
    are the identity, so image_embeds @ caption_embeds.T is the matrix itself."""
    similarity = np.asarray(similarity, dtype=np.float32)
    return retrieval_metrics(similarity, np.eye(similarity.shape[1], dtype=np.float32), np.asarray(caption_of_image))


def test_recall_and_mean_rank_exact_with_ties():
    s = [[0.9, 0.1, 0.2, 0.3],   # own caption first: rank 1
         [0.5, 0.4, 0.6, 0.1],   # two wrong captions above: rank 3
         [0.7, 0.7, 0.7, 0.7],   # all tied: ties count against it, rank 4 (the worst)
         [0.2, 0.8, 0.3, 0.5]]   # one above: rank 2
    m = scored(s, [0, 1, 2, 3])
    ranks = retrieval_ranks(np.asarray(s, np.float32), np.eye(4, dtype=np.float32), np.arange(4))
    assert ranks["i2t"].tolist() == [1, 3, 4, 2]
    assert ranks["t2i"].tolist() == [1, 3, 1, 2]  # columns: caption 2's image 0.7 is tied by no wrong image
    assert m["i2t_R@1"] == 0.25 and m["i2t_R@5"] == 1.0 and m["i2t_mean_rank"] == 2.5
    assert m["t2i_R@1"] == 0.5 and m["t2i_mean_rank"] == 1.75
    assert m["mean_R@1"] == 0.375


def test_recall_at_5_and_10_exact():
    wanted = [1, 2, 5, 6, 10, 11, 12, 1, 3, 7, 9, 4]  # i2t rank of each image's own caption
    s = np.zeros((12, 12), np.float32)
    for i, rank in enumerate(wanted):
        s[i, i] = 0.5
        wrong = [j for j in range(12) if j != i][:rank - 1]
        s[i, wrong] = 0.9
    m = scored(s, np.arange(12))
    assert m["i2t_R@1"] == 2 / 12
    assert m["i2t_R@5"] == 6 / 12
    assert m["i2t_R@10"] == 10 / 12
    assert m["i2t_mean_rank"] == pytest.approx(71 / 12)


def test_duplicate_caption_counts_its_best_ranked_image():
    # images 0 and 1 share caption 0; image 2 has caption 1
    s = [[0.9, 0.1],
         [0.2, 0.8],
         [0.3, 0.6]]
    ranks = retrieval_ranks(np.asarray(s, np.float32), np.eye(2, dtype=np.float32), np.array([0, 0, 1]))
    assert ranks["i2t"].tolist() == [1, 2, 1]
    # caption 0: its best image (0.9) is first; its worst (0.2) would rank 2 behind image 2
    assert ranks["t2i"].tolist() == [1, 2]
    m = scored(s, [0, 0, 1])
    assert m["t2i_R@1"] == 0.5 and m["t2i_mean_rank"] == 1.5


def test_a_tie_between_two_correct_images_does_not_count_against_them():
    s = [[0.5, 0.1], [0.5, 0.2], [0.4, 0.9]]
    ranks = retrieval_ranks(np.asarray(s, np.float32), np.eye(2, dtype=np.float32), np.array([0, 0, 1]))
    assert ranks["t2i"].tolist() == [1, 1]


def test_all_equal_embeddings_score_at_or_below_chance():
    n = 10
    m = retrieval_metrics(np.ones((n, 8), np.float32), np.ones((n, 8), np.float32), np.arange(n))
    assert m["i2t_R@1"] <= 1 / n and m["t2i_R@1"] <= 1 / n
    assert m["i2t_mean_rank"] == n and m["t2i_mean_rank"] == n  # the worst rank, not the best


def test_zero_shot_ties_count_against_the_true_class():
    scores = np.array([[0.3, 0.3, 0.3], [0.1, 0.5, 0.2], [0.4, 0.4, 0.1]])
    truth = np.array([0, 1, 1])
    assert (pessimistic_argmax(scores, truth) == truth).tolist() == [False, True, False]


class PromptModel:
    """Returns a fixed, non-unit vector per text, so the ensemble's normalisations show."""

    vectors = {"a x": [3.0, 0.0], "the x": [0.0, 1.0], "a y": [0.0, 2.0], "the y": [1.0, 0.0]}

    def embed_texts(self, texts):
        return np.array([self.vectors[t] for t in texts], np.float32)


def test_prompt_ensemble_averages_normalised_embeddings():
    model = PromptModel()
    np.testing.assert_array_equal(class_embeddings(model, ["x", "y"], "a {label}"), [[3, 0], [0, 2]])  # as before
    both = class_embeddings(model, ["x", "y"], ["a {label}", "the {label}"])
    h = np.sqrt(0.5)
    np.testing.assert_allclose(both, [[h, h], [h, h]], rtol=1e-6)  # unnormalised averaging would tilt both


def test_label_prompt_flag_is_repeatable():
    parse = finetune.build_parser().parse_args
    assert finetune.config_from_args(parse([])).label_prompt == "a photo of {label}"
    assert finetune.config_from_args(parse(["--label-prompt", "a {label}"])).label_prompt == "a {label}"
    both = finetune.config_from_args(parse(["--label-prompt", "a {label}", "--label-prompt", "the {label}"]))
    assert both.label_prompt == ["a {label}", "the {label}"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_images")
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        path = folder / f"{i}.png"
        Image.new("RGB", (32, 32), colour).save(path)
        paths.append(str(path))
    return paths


def test_non_finite_embeddings_are_refused(tiny_hf, images):
    model = mlx_clip.load(tiny_hf)
    eval_set = EvalSet(images, ["red", "green", "blue", "yellow"], [None] * 4)
    assert evaluate(model, eval_set)["val_size"] == 4
    model.visual_projection.weight = mx.full(model.visual_projection.weight.shape, float("nan"))
    with pytest.raises(NonFiniteEmbeddings, match="4 of 4 image embeddings are NaN"):
        evaluate(model, eval_set)


def test_zero_shot_over_a_single_label_is_skipped(tiny_hf, images):
    model = mlx_clip.load(tiny_hf)
    one = evaluate(model, EvalSet(images, ["a", "b", "c", "d"], ["cat"] * 4))
    assert "zero_shot_acc" not in one and "trivially 1.0" in one["zero_shot_note"]
    two = evaluate(model, EvalSet(images, ["a", "b", "c", "d"], ["cat", "dog", "cat", "dog"]),
                   label_prompt=["a {label}", "a photo of a {label}"])
    assert two["zero_shot_classes"] == 2 and "zero_shot_note" not in two
    json.dumps(two)  # metrics stay JSON


def test_evaluate_passes_each_images_content_to_image_to_image_recall(tiny_hf, images):
    """One object's photos where two records share one file: the copy is no partner, so only the
    other photo is a hit; a set of copies alone has no query (was +1.000 for any untied model)."""
    model = mlx_clip.load(tiny_hf)
    paths = [images[0], images[0], images[1], images[2]]
    copies = evaluate(model, EvalSet(paths, list("abcd"), [None] * 4, groups=[0, 0, 1, 2], images=["p", "p", "q", "r"]))
    assert copies["i2i_queries"] == 0 and "i2i_R@1" not in copies
    pair = evaluate(model, EvalSet(paths, list("abcd"), [None] * 4, groups=[0, 0, 0, 1], images=["p", "p", "q", "r"]))
    assert pair["i2i_queries"] == 3  # 0 and 1 look for 2, 2 for either of them
