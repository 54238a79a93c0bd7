"""Exporting into a used folder leaves no old model for loaders to pick, and a push uploads only
what the export wrote (with its card), never a planted .env or notes/."""


import huggingface_hub
import mlx.core as mx
import numpy as np
import pytest
from huggingface_hub.utils import filter_repo_objects

import mlx_clip
from mlx_clip.errors import InputError
from mlx_clip.outputs import hub
from mlx_clip.outputs.export import export_hf

TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdef"


@pytest.fixture(scope="module")
def model(tiny_hf):
    return mlx_clip.load(tiny_hf)


def test_an_export_into_a_used_folder_leaves_no_old_model(model, tiny_hf, tmp_path):
    folder = tmp_path / "export"
    old = mlx_clip.load(tiny_hf)
    old.save(folder)  # an MLX-layout model: mlx_model.safetensors, which loaders read first
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"old shard")
    (folder / "spiece.model").write_bytes(b"another family's tokenizer")
    (folder / "notes.txt").write_text("the user's own file")
    (folder / "README.md").write_text("a card")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("not the export's")
    (folder / ".export-staging.part").symlink_to(tmp_path / "victim")  # a planted staging link: never followed
    export_hf(model, folder)
    assert (tmp_path / "victim" / "keep.txt").read_text() == "not the export's"
    names = sorted(p.name for p in folder.iterdir())
    assert "mlx_model.safetensors" not in names and "model.safetensors.index.json" not in names
    assert "model-00001-of-00002.safetensors" not in names and "spiece.model" not in names
    assert (folder / "notes.txt").read_text() == "the user's own file" and (folder / "README.md").is_file()
    assert not any(name.endswith(".part") for name in names)
    text = ["a red circle"]
    assert np.allclose(np.asarray(mlx_clip.load(folder).embed_texts(text)), np.asarray(model.embed_texts(text)),
                       atol=1e-5)


def test_an_export_of_a_changed_model_is_what_loads_back(model, tiny_hf, tmp_path):
    folder = tmp_path / "export"
    other = mlx_clip.load(tiny_hf)
    other.save(folder)  # a stale MLX copy of the original weights
    changed = mlx_clip.load(tiny_hf)
    changed.text_model.final_layer_norm.bias = mx.ones_like(changed.text_model.final_layer_norm.bias)
    export_hf(changed, folder)
    text = ["a red circle"]
    assert np.allclose(np.asarray(mlx_clip.load(folder).embed_texts(text)), np.asarray(changed.embed_texts(text)),
                       atol=1e-5)


def test_push_uploads_only_the_export_and_its_card(model, tmp_path, monkeypatch):
    folder = export_hf(model, tmp_path / "export")
    (folder / ".env").write_text(f"HF_TOKEN={TOKEN}\n")
    (folder / "notes").mkdir()
    (folder / "notes" / "private.txt").write_text("field notes")
    (folder / "config.json.part").write_text("half")
    uploaded = []

    def upload_folder(**kwargs):  # what huggingface_hub would send, by its own filter
        files = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        uploaded.extend(filter_repo_objects(files, allow_patterns=kwargs.get("allow_patterns"),
                                            ignore_patterns=kwargs.get("ignore_patterns")))

    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, **kw: huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.push_to_hub(folder, "alice/coins-clip")
    assert "README.md" in uploaded and "model.safetensors" in uploaded and "config.json" in uploaded
    assert not any(name.startswith((".env", "notes")) or name.endswith(".part") for name in uploaded), uploaded


def test_push_refuses_a_linked_export_file(model, tmp_path, monkeypatch):
    folder = export_hf(model, tmp_path / "export")
    secret = tmp_path / "id_rsa"
    secret.write_text("private key")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(secret)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: pytest.fail("uploaded"))
    with pytest.raises(InputError, match="is a link"):
        hub.push_to_hub(folder, "alice/coins-clip")
