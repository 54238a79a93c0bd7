"""Weights: find a model folder (local or hub), read safetensors, map HF <-> MLX names and layouts.

HF and MLX names are the same; the one layout difference is the patch embedding, a
convolution kernel stored (out, in, kh, kw) by PyTorch and (out, kh, kw, in) by MLX.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from ..errors import InputError
from ..io import open_regular, read_small_text

MLX_WEIGHTS = "mlx_model.safetensors"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
HF_PICKLE = "pytorch_model.bin"
PATCH_KEY = "vision_model.embeddings.patch_embedding.weight"
# Buffers older transformers versions saved; they hold nothing learned.
IGNORED_KEYS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
_HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors"]


def is_repo_id(name: Any, local_path_wins: bool = True) -> bool:
    """Whether `name` is a hub repo id `owner/name` by huggingface_hub's own rules.

    The one test for it (model loading, the registry, the model card, pushing): `owner/name`
    only, never a bare name, and, unless `local_path_wins` is False (a push target), never a
    local path that exists, which is what the user meant then.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(name, str) or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not (local_path_wins and Path(name).expanduser().exists())


def resolve_model_folder(path_or_repo: str | Path) -> Path:
    """A local model folder, downloading `owner/name` from the Hugging Face hub when needed."""
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"{path}: is a file; a model is a folder with config.json and weights")
    name = str(path_or_repo)
    if not is_repo_id(name):
        raise InputError(f"{name}: no such model folder")
    return _download(name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
        if not any(folder.glob("*.safetensors")):
            print(f"{repo_id}: no safetensors on the hub; fetching {HF_PICKLE}", file=sys.stderr)
            folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS + [HF_PICKLE]))
        return folder
    except GatedRepoError:
        raise InputError(f"{repo_id}: gated repository on the Hugging Face hub; log in with `hf auth login`") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError):
        raise InputError(f"{repo_id}: no such model folder here, and no such repository on the Hugging Face hub") from None
    except LocalEntryNotFoundError:
        raise InputError(
            f"{repo_id}: not a local folder, and it could not be downloaded from the Hugging Face hub "
            "(offline, or not in the cache)"
        ) from None
    except OSError as err:
        raise InputError(f"{repo_id}: download from the Hugging Face hub failed ({err})") from None


MAX_HEADER = 100_000_000  # bytes: safetensors' own limit; a header is read into memory before anything else
FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
OTHER_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8,
                "F8_E4M3": 1, "F8_E5M2": 1}


def read_header(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a safetensors file, from its header alone (bounded by
    MAX_HEADER and the file's size), every entry checked against the file: an InputError naming
    the file for a header that is not JSON, longer than the file, with offsets outside it, sizes
    that do not match the shape, or weights of an integer dtype (only unused buffers may be)."""
    try:
        handle = open_regular(path)  # a FIFO named model.safetensors would block the open forever
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        with handle:
            size = os.fstat(handle.fileno()).st_size
            header_len = struct.unpack("<Q", handle.read(8))[0]
            if header_len > min(MAX_HEADER, size - 8):
                raise InputError(f"{path}: truncated or corrupt safetensors file (its header claims "
                                 f"{header_len:,} bytes, the file has {size:,})")
            header = json.loads(handle.read(header_len))
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: not a valid safetensors file (corrupt header)") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a valid safetensors file (its header is not a JSON object)")
    data_size = size - 8 - header_len
    shapes = {}
    for name, entry in header.items():
        if name != "__metadata__":
            shapes[name] = _checked_entry(path, name, entry, data_size)
    return shapes


def _checked_entry(path: Path, name: str, entry: object, data_size: int) -> tuple[int, ...]:
    bad = f"{path}: not a valid safetensors file (tensor {name!r}: "
    if not isinstance(entry, dict):
        raise InputError(bad + "no dtype, shape and offsets)")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise InputError(bad + f"shape {shape!r})")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        raise InputError(f"{path}: truncated or corrupt safetensors file (tensor {name!r} at offsets {offsets!r}, "
                         f"the file holds {data_size:,} data bytes)")
    itemsize = FLOAT_DTYPES.get(dtype) or OTHER_DTYPES.get(dtype)  # type: ignore[arg-type]
    if itemsize is None:
        raise InputError(bad + f"unknown dtype {dtype!r})")
    if dtype not in FLOAT_DTYPES and name not in IGNORED_KEYS:
        raise InputError(f"{path}: tensor {name!r} has the integer dtype {dtype}; model weights are floating point")
    count = 1
    for n in shape:
        count *= n
    if count * itemsize != offsets[1] - offsets[0]:
        raise InputError(bad + f"{offsets[1] - offsets[0]:,} bytes for shape {tuple(shape)} of {dtype})")
    return tuple(shape)


def read_safetensors(path: Path) -> dict[str, mx.array]:
    """All tensors of one safetensors file; a truncated, corrupt or integer file raises InputError
    (read_header checks the header before any tensor is read)."""
    read_header(path)
    try:
        return mx.load(str(path))
    except (RuntimeError, ValueError) as err:
        raise InputError(f"{path}: unreadable safetensors file ({err})") from None


def _read_pickle(path: Path) -> dict[str, mx.array]:
    try:
        import torch
    except ImportError:
        raise InputError(f"{path}: a pickled checkpoint needs PyTorch to convert (pip install torch)") from None
    print(f"{path}: converting a pickled PyTorch checkpoint with torch.load(weights_only=True)", file=sys.stderr)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad pickles
        raise InputError(f"{path}: could not load safely with torch.load(weights_only=True) ({err})") from None
    out = {}
    for key, tensor in state.items():
        if tensor.dtype == torch.bfloat16:
            out[key] = mx.array(tensor.float().numpy()).astype(mx.bfloat16)
        else:
            out[key] = mx.array(tensor.numpy())
    return out


def read_weights(folder: Path) -> tuple[dict[str, mx.array], bool]:
    """The folder's tensors and whether they are already in MLX layout."""
    if (folder / MLX_WEIGHTS).is_file():
        return read_safetensors(folder / MLX_WEIGHTS), True
    if (folder / HF_WEIGHTS).is_file():
        return read_safetensors(folder / HF_WEIGHTS), False
    if (folder / HF_INDEX).is_file():
        weights: dict[str, mx.array] = {}
        for shard in shard_files(folder):
            weights.update(read_safetensors(shard))
        return weights, False
    if (folder / HF_PICKLE).is_file():
        return _read_pickle(folder / HF_PICKLE), False
    raise InputError(f"{folder}: no weights ({MLX_WEIGHTS}, {HF_WEIGHTS} or {HF_PICKLE})")


def shard_files(folder: Path) -> list[Path]:
    """The shards a sharded checkpoint's index names, each a file inside `folder`: a folder from
    the hub or a colleague may name `../x`, an absolute path or a link leading out, never read."""
    index = folder / HF_INDEX
    try:
        weight_map = json.loads(read_small_text(index))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise InputError(f"{index}: not a sharded checkpoint index (no weight_map of tensor -> file)") from None
    inside = folder.resolve()
    shards = []
    for name in names:
        shard = folder / str(name)
        if (not isinstance(name, str) or Path(name).name != name or name in (".", "..")
                or shard.resolve().parent != inside):
            raise InputError(f"{index}: names the shard {name!r} outside its folder; a shard is a file beside the index")
        if not shard.is_file():
            raise InputError(f"{shard}: missing shard named in {HF_INDEX}")
        shards.append(shard)
    return shards


def check_layer_counts(config: Any, names: Any, source: Path) -> None:
    """Each tower's num_hidden_layers against the layers its weights hold, before the model is
    built: building follows the config, so a config.json claiming 100,000 layers would take
    gigabytes before check_weights could refuse it."""
    for tower, sub in (("text_model", config.text), ("vision_model", config.vision)):
        prefix = f"{tower}.encoder.layers."
        found = {name[len(prefix):].split(".", 1)[0] for name in names if name.startswith(prefix)}
        held = 1 + max((int(i) for i in found if i.isdigit()), default=-1)
        if held != sub.num_hidden_layers:
            raise InputError(f"{source}: config.json gives {tower} {sub.num_hidden_layers} layers "
                             f"(num_hidden_layers), its weights hold {held}")


def hf_to_mlx(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """HF tensor names and layouts -> MLX ones (drops the unused position_ids buffers)."""
    out = {k: v for k, v in weights.items() if k not in IGNORED_KEYS}
    if PATCH_KEY in out:
        out[PATCH_KEY] = out[PATCH_KEY].transpose(0, 2, 3, 1)
    return out


def mlx_to_hf(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """MLX tensor names and layouts -> HF ones."""
    out = dict(weights)
    if PATCH_KEY in out:
        out[PATCH_KEY] = out[PATCH_KEY].transpose(0, 3, 1, 2)
    return out


def check_weights(expected: dict[str, tuple[int, ...]], weights: dict[str, mx.array], source: Path) -> None:
    """Every tensor the config needs is there with its shape, and nothing else."""
    for name, shape in expected.items():
        if name not in weights:
            raise InputError(f"{source}: missing tensor {name!r} (the config expects shape {shape})")
        got = tuple(weights[name].shape)
        if got != shape:
            raise InputError(
                f"{source}: tensor {name!r} has shape {got}, the config expects {shape}"
            )
    extra = sorted(set(weights) - set(expected))
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise InputError(f"{source}: unexpected tensor {extra[0]!r}{more}; is this a CLIPModel checkpoint?")


def parameter_shapes(module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in tree_flatten(module.parameters())}
