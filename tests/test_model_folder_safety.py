"""Model folders from anyone: a config.json that claims more layers than its weights hold is refused
before the model is built; malformed safetensors headers, nonsense sizes, bad tokenizer files and
integer weights are one line each; a sharded index names no file outside its folder."""

import json
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mlx_clip
from mlx_clip import convert
from mlx_clip.errors import InputError
from mlx_clip.models import model as model_module


@pytest.fixture
def folder(tiny_hf, tmp_path):
    return shutil.copytree(tiny_hf, tmp_path / "model")


def _config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def _refused(folder, *parts):
    with pytest.raises(InputError) as err:
        mlx_clip.load(folder)
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


def test_a_config_claiming_100000_layers_is_refused_before_the_model_is_built(folder, monkeypatch, capsys):
    _config(folder, lambda c: c["text_config"].update(num_hidden_layers=100_000))

    def never(*args, **kwargs):
        raise AssertionError("the model was built from the config before it was checked")

    monkeypatch.setattr(model_module.Encoder, "__init__", never)
    _refused(folder, "config.json", "100000 layers", "its weights hold 2")
    assert convert.main(["--hf-path", str(folder), "--mlx-path", str(folder.parent / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def _header(folder, edit_header=None, edit_bytes=None):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + length]), data[8 + length:]
    if edit_header:
        edit_header(header)
    raw = json.dumps(header).encode()
    new = struct.pack("<Q", len(raw)) + raw + body
    path.write_bytes(edit_bytes(new) if edit_bytes else new)


def _first_tensor(header):
    return next(v for k, v in header.items() if k != "__metadata__")


@pytest.mark.parametrize("case, expect", [
    ("bad_json", "corrupt header"),
    ("header_longer_than_file", "header claims"),
    ("offsets_outside", "offsets"),
    ("size_not_shape", "bytes for shape"),
    ("not_an_object", "not a JSON object"),
])
def test_a_malformed_safetensors_header_is_one_line(folder, case, expect):
    path = folder / "model.safetensors"
    if case == "bad_json":
        _header(folder, edit_bytes=lambda b: b[:8] + b"{" * 4 + b[12:])
    elif case == "header_longer_than_file":
        path.write_bytes(struct.pack("<Q", 10**12) + path.read_bytes()[8:])
    elif case == "offsets_outside":
        _header(folder, lambda h: _first_tensor(h).update(data_offsets=[0, 10**12]))
    elif case == "size_not_shape":
        _header(folder, lambda h: _first_tensor(h).update(shape=[10**6, 10**6]))
    elif case == "not_an_object":
        raw = b"[1, 2]"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    _refused(folder, "model.safetensors", expect)


def test_integer_weights_are_one_line(folder):
    tensors = load_file(folder / "model.safetensors")
    tensors["visual_projection.weight"] = tensors["visual_projection.weight"].astype(np.int32)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    _refused(folder, "visual_projection.weight", "integer dtype I32")


@pytest.mark.parametrize("tower, field, value", [
    ("vision_config", "num_attention_heads", 0), ("text_config", "hidden_size", -32),
    ("text_config", "intermediate_size", "64"), ("vision_config", "patch_size", 0),
    ("text_config", "layer_norm_eps", -1),
])
def test_nonsense_sizes_are_one_line(folder, tower, field, value):
    _config(folder, lambda c: c[tower].update({field: value}))
    _refused(folder, "config.json", f"{tower}.{field}")


@pytest.mark.parametrize("name, content", [
    ("tokenizer.json", "{not json"), ("tokenizer.json", '{"model": {"type": "nonsense"}}'),
    ("tokenizer_config.json", "[1, 2]"), ("tokenizer_config.json", '{"pad_token": [1]}'),
])
def test_a_bad_tokenizer_file_is_one_line(folder, name, content):
    (folder / name).write_text(content)
    _refused(folder, name)


def _shard(folder, shard_name):
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {name: shard_name for name in tensors}}))
    return tensors


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink_out"])
def test_a_sharded_index_names_no_file_outside_its_folder(folder, tmp_path, where):
    outside = tmp_path / "outside.safetensors"
    shutil.copy(folder / "model.safetensors", outside)
    name = {"parent": "../outside.safetensors", "absolute": str(outside), "symlink_out": "link.safetensors"}[where]
    _shard(folder, name)
    if where == "symlink_out":
        (folder / "link.safetensors").symlink_to(outside)
    _refused(folder, "model.safetensors.index.json", "outside its folder")


def test_a_sharded_checkpoint_inside_its_folder_still_loads(folder):
    tensors = _shard(folder, "model-00001-of-00001.safetensors")
    save_file(tensors, folder / "model-00001-of-00001.safetensors", metadata={"format": "pt"})
    assert mlx_clip.load(folder).embed_texts(["a coin"]).shape == (1, 16)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"])
def test_a_settings_file_of_100_gib_is_refused_from_its_size(folder, name):
    """A sparse file that claims 100 GiB costs its maker nothing and would fill the memory once
    read: every settings-sized file of a model folder is refused from its size, in one line."""
    import os

    os.truncate(folder / name, 100 << 30)
    with pytest.raises(InputError, match=rf"{name}: 107,374,182,400 bytes is more than the 64 MiB a settings file may hold"):
        mlx_clip.load(folder)


def test_a_run_folders_files_of_100_gib_are_refused_from_their_size(tmp_path):
    """The files of a run folder from someone else (its split.json, config.json, checkpoint
    pointer) are read the same way: compare and --resume say so in one line."""
    import os

    from mlx_clip.run.compare_runs import load_run
    from mlx_clip.train.checkpoint import resolve_checkpoint

    run = tmp_path / "runs" / "theirs"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "split.json", "checkpoints/latest"):
        (run / name).write_text("{}")
        os.truncate(run / name, 100 << 30)
    with pytest.raises(InputError, match=r"split.json: 107,374,182,400 bytes is more than"):
        load_run(run)
    with pytest.raises(InputError, match=r"latest: 107,374,182,400 bytes is more than"):
        resolve_checkpoint(str(run), tmp_path / "runs")
