"""convert.py both ways: bit-identical round trip, sentence-transformers loads the export, clear errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

import mlx_clip
from mlx_clip.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def run_convert(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "convert.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env)


def test_round_trip_is_bit_identical(tiny_hf, tmp_path):
    mlx_dir, hf_dir = tmp_path / "mlx", tmp_path / "hf"
    assert run_convert("--hf-path", tiny_hf, "--mlx-path", mlx_dir).returncode == 0
    done = run_convert("--to-hf", "--mlx-path", mlx_dir, "--hf-path", hf_dir)
    assert done.returncode == 0, done.stderr
    original, back = load_file(tiny_hf / "model.safetensors"), load_file(hf_dir / "model.safetensors")
    assert set(original) == set(back)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert back[name].tobytes() == tensor.tobytes(), name


def test_export_loads_in_transformers_and_sentence_transformers(tiny_hf, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPModel

    model = mlx_clip.load(tiny_hf)
    folder = mlx_clip.export_hf(model, tmp_path / "export")
    for name in ["model.safetensors", "config.json", "preprocessor_config.json", "tokenizer.json",
                 "modules.json", "config_sentence_transformers.json"]:
        assert (folder / name).is_file(), name
    CLIPModel.from_pretrained(folder)
    st = SentenceTransformer(str(folder), device="cpu")

    texts = ["a red amphora", "a bronze coin from the Roman period", "word " * 200]  # last is > 77 tokens
    images = [Image.new("RGB", (40 + 7 * i, 33), (40 * i, 200 - 30 * i, 90)) for i in range(4)]
    for theirs, ours in [(st.encode(texts), model.embed_texts(texts)), (st.encode(images), model.embed_images(images))]:
        theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
        cosine = (theirs * ours).sum(axis=1)
        assert cosine.min() >= 0.9999, cosine


def test_bfloat16_conversion_cli(tiny_hf, tmp_path):
    done = run_convert("--hf-path", tiny_hf, "--mlx-path", tmp_path / "bf16", "--dtype", "bfloat16")
    assert done.returncode == 0, done.stderr
    assert "bfloat16" in done.stdout
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["mlx_clip_dtype"] == "bfloat16"
    done = run_convert("--from", tiny_hf, "--to", tmp_path / "short", "--dtype", "BF16")  # as users write it
    assert done.returncode == 0 and "bfloat16" in done.stdout, done.stderr
    assert mlx_clip.load(tiny_hf, dtype="fp16").dtype == mx.float16


def test_converting_a_folder_onto_itself_is_refused(tiny_hf, tmp_path):
    """--to naming --from's own folder would leave two models in one folder (an MLX file beside the
    HF one) or rewrite the files being read: one line, nothing written."""
    folder = _copy(tiny_hf, tmp_path / "model")
    before = sorted(p.name for p in folder.iterdir())
    done = run_convert("--from", folder, "--to", tmp_path / "." / "model")
    assert done.returncode == 2 and done.stderr.startswith("error: --to ") and "is the folder --from reads" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.numpy import save_file

    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("case", ["missing_folder", "not_clip", "missing_tensor", "mismatched_tensor",
                                  "truncated", "no_weights", "bad_json", "repo_not_found"])
def test_bad_input_is_one_clear_line(tiny_hf, tmp_path, case, monkeypatch):
    folder = tmp_path / "model"
    expect = {}
    if case == "missing_folder":
        folder = tmp_path / "does" / "not" / "exist"
        expect = [str(folder), "no such model folder"]
    elif case == "not_clip":
        _copy(tiny_hf, folder)
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
        expect = ["config.json", "not a CLIP config", "bert"]
    elif case == "missing_tensor":
        _copy(tiny_hf, folder)
        _edit_weights(folder, lambda t: t.pop("text_projection.weight"))
        expect = ["missing tensor", "text_projection.weight", "(16, 32)"]
    elif case == "mismatched_tensor":
        _copy(tiny_hf, folder)
        _edit_weights(folder, lambda t: t.update({"visual_projection.weight": np.zeros((8, 32), np.float32)}))
        expect = ["visual_projection.weight", "(8, 32)", "(16, 32)"]
    elif case == "truncated":
        _copy(tiny_hf, folder)
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        expect = ["model.safetensors", "truncated"]
    elif case == "no_weights":
        _copy(tiny_hf, folder)
        (folder / "model.safetensors").unlink()
        expect = ["no weights"]
    elif case == "bad_json":
        _copy(tiny_hf, folder)
        (folder / "config.json").write_text("{not json")
        expect = ["config.json", "not valid JSON"]
    elif case == "repo_not_found":
        folder = "nobody-here/no-such-clip-model"
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        expect = ["nobody-here/no-such-clip-model", "Hugging Face hub"]
    with pytest.raises(InputError) as err:
        mlx_clip.load(folder)
    message = str(err.value)
    assert "\n" not in message
    for part in expect:
        assert part in message, (part, message)
    # The CLI prints the same single line, no traceback, exit code 2.
    import os
    done = run_convert("--hf-path", folder, "--mlx-path", tmp_path / "out", env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: "), done.stderr


def test_help_explains_every_flag():
    out = run_convert("--help").stdout
    for flag in ["--from", "--to", "--format", "--dtype", "--push-to-hub"]:
        assert flag in out


def test_pickled_checkpoint_is_read_only_with_weights_only(tiny_hf, tmp_path):
    """A folder with only pytorch_model.bin converts through torch.load(weights_only=True), and says so."""
    import torch

    folder = _copy(tiny_hf, tmp_path / "pickled")
    tensors = load_file(folder / "model.safetensors")
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    done = run_convert("--hf-path", folder, "--mlx-path", tmp_path / "mlx")
    assert done.returncode == 0, done.stderr
    assert "weights_only=True" in done.stderr
    ours, reference = mlx_clip.load(tmp_path / "mlx"), mlx_clip.load(tiny_hf)
    texts = ["a coin", "an amphora"]
    np.testing.assert_array_equal(ours.embed_texts(texts), reference.embed_texts(texts))
    # A pickle that holds code, not tensors, is refused rather than run.
    import pickle

    class Exploit:
        def __reduce__(self):
            return (print, ("code ran",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(InputError, match="weights_only=True"):
        mlx_clip.load(folder)


@pytest.mark.parametrize("source_max_length", [None, 1000000000000000019884624838656])
def test_export_caps_model_max_length_so_long_captions_truncate(tiny_hf, tmp_path, source_max_length):
    """A source tokenizer without model_max_length (or transformers' 1e30 default): the export says
    77, so sentence-transformers truncates a 200-token caption as the hub's CLIP repos do."""
    from sentence_transformers import SentenceTransformer

    source = tmp_path / "source"
    shutil.copytree(tiny_hf, source)
    config = json.loads((source / "tokenizer_config.json").read_text())
    config.pop("model_max_length", None)
    if source_max_length is not None:
        config["model_max_length"] = source_max_length
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    model = mlx_clip.load(source)
    folder = mlx_clip.export_hf(model, tmp_path / "export")
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 77
    caption = "word " * 200
    vector = SentenceTransformer(str(folder), device="cpu").encode([caption])[0]
    assert float(vector @ model.embed_texts([caption])[0] / np.linalg.norm(vector)) >= 0.9999


def test_export_keeps_a_smaller_model_max_length(tiny_hf, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_hf, source)
    config = json.loads((source / "tokenizer_config.json").read_text())
    (source / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 64}))
    folder = mlx_clip.export_hf(mlx_clip.load(source), tmp_path / "export")
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 64
