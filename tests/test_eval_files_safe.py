"""Evaluation files (eval_*.npz) are read without pickle: a crafted file in a shared run folder
runs no code in compare.py or the report, and old files still give their numbers."""

import json

import numpy as np
import pytest

from mlx_clip import compare
from mlx_clip.errors import InputError
from mlx_clip.train.evaluate import EvalDetails, ZeroShot


class WritesMarker:
    """Unpickling this object opens (creates) the marker file: code run from a data file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _numbers(n: int = 4) -> dict:
    rng = np.random.default_rng(0)
    return {"image_embeds": rng.normal(size=(n, 3)), "caption_embeds": rng.normal(size=(n, 3)),
            "caption_of_image": np.arange(n), "i2t_ranks": np.arange(1, n + 1), "t2i_ranks": np.arange(1, n + 1)}


def _crafted(path, marker, key: str = "captions") -> None:
    """An npz in the old layout whose texts hold a pickled object that would write `marker`."""
    np.savez(path, **_numbers(), **{key: np.array([WritesMarker(marker)] * 4, dtype=object)})


@pytest.mark.parametrize("key", ["captions", "captions_json"])
def test_a_crafted_pickle_in_an_eval_file_runs_nothing(tmp_path, key):
    marker = tmp_path / "pwned"
    _crafted(tmp_path / "eval_test.npz", marker, key)
    try:
        EvalDetails.load(tmp_path / "eval_test.npz")
    except InputError as err:
        assert "eval_test.npz" in str(err) and "\n" not in str(err)
    assert not marker.exists()


def test_compare_on_a_run_folder_with_a_crafted_eval_file_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"model": "m", "captions": []}))
        (run / "split.json").write_text(json.dumps({"test": ["r0", "r1", "r2", "r3"], "fingerprint": "f"}))
        _crafted(run / "eval_test.npz", marker)
        runs.append(str(run))
    compare.main(runs + ["--out", str(tmp_path / "out")])
    assert not marker.exists()


def test_eval_files_round_trip_texts_as_plain_arrays(tmp_path):
    zero_shot = ZeroShot(["amphora", "lamp | <b>"], np.array([0, 2]), np.array([0, 1]), np.array([1, 1]))
    details = EvalDetails(**{k: v for k, v in _numbers().items() if k not in ("i2t_ranks", "t2i_ranks")},
                          captions=["a “red” pot", "b", "c", "d"],
                          ranks={"i2t": np.arange(1, 5), "t2i": np.arange(1, 5)}, zero_shot=zero_shot)
    details.save(tmp_path / "eval.npz")
    with np.load(tmp_path / "eval.npz", allow_pickle=False) as data:  # nothing in it needs pickle
        assert all(data[key].dtype != object for key in data.files)
    back = EvalDetails.load(tmp_path / "eval.npz")
    assert back.captions == details.captions and back.zero_shot.classes == zero_shot.classes
    assert np.array_equal(back.ranks["t2i"], details.ranks["t2i"])


def test_an_old_eval_file_gives_its_numbers_without_its_pickled_texts(tmp_path):
    np.savez(tmp_path / "old.npz", **_numbers(), captions=np.array(["a", "b", "c", "d"], dtype=object),
             zs_classes=np.array(["x", "y"], dtype=object), zs_index=np.array([0, 1]), zs_truth=np.array([0, 1]),
             zs_predicted=np.array([0, 0]))
    old = EvalDetails.load(tmp_path / "old.npz")
    assert old.captions == [] and old.zero_shot.classes == []
    assert np.array_equal(old.ranks["i2t"], np.arange(1, 5)) and list(old.zero_shot.correct) == [True, False]


def test_a_damaged_eval_file_is_one_line(tmp_path):
    (tmp_path / "eval.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="eval.npz"):
        EvalDetails.load(tmp_path / "eval.npz")
