"""One rule for "is this a Hugging Face hub repo id" (models.weights.is_repo_id, over
huggingface_hub's own validate_repo_id), used by model loading, the registry, the model card
and push; and no module reaches into another's private names."""

from pathlib import Path

import pytest

from mlx_clip import registry
from mlx_clip.errors import InputError
from mlx_clip.models import weights
from mlx_clip.models.weights import is_repo_id
from mlx_clip.outputs import hub
from mlx_clip.outputs.card_info import CardInfo
from mlx_clip.outputs.model_card import render

PACKAGE = Path(__file__).resolve().parents[1] / "mlx_clip"
GOOD = ["alice/coins-clip", "openai/clip-vit-base-patch32", "A1/b_c.d"]
BAD = ["coins-clip", "a/b/c", "alice/x..y", "alice/x--y", ".alice/x", "alice/x.git", "alice/-x", "/abs/x",
       "alice/", "~/x", "a\\b", "alice/" + "x" * 97, None, 3]


@pytest.mark.parametrize("name", GOOD)
def test_repo_ids_are_accepted_everywhere(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id(name) and hub.check_repo_id(name) == name
    assert registry.resolve_source(name) == (name, "hub")
    card = render(CardInfo(base_model=name, repo_id="me/tuned"))
    assert f"base_model: {name}" in card


@pytest.mark.parametrize("name", BAD)
def test_what_is_no_repo_id_is_refused_everywhere(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_repo_id(name)
    with pytest.raises(InputError, match="OWNER/NAME"):
        hub.check_repo_id(name)
    if isinstance(name, str):
        with pytest.raises(InputError, match="not a Hugging Face hub repo id"):
            registry.resolve_source(name)
        with pytest.raises(InputError, match="no such model folder"):
            weights.resolve_model_folder(name)
    assert "base_model:" not in render(CardInfo(base_model=name, repo_id="me/tuned"))


def test_an_existing_local_path_is_never_a_repo_id_but_can_be_pushed_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alice" / "coins-clip").mkdir(parents=True)
    assert not is_repo_id("alice/coins-clip")
    assert registry.resolve_source("alice/coins-clip") == (str((tmp_path / "alice/coins-clip").resolve()), "local")
    assert hub.check_repo_id("alice/coins-clip") == "alice/coins-clip"  # a push target names the hub
