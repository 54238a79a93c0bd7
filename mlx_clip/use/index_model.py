"""The model an index embeds with: a model folder, a run folder (runs/NAME: its model/), or a hub
repo id; the collection name it gives by default; the identity its vectors carry (so that new
weights in the same folder re-embed everything); and its registration with the llm plugin, so
`llm similar NAME -d FILE.db -c "a bronze coin"` embeds the query with the same model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import registry
from ..errors import InputError
from ..io import hash_file
from ..models import weights as W
from ..models.family import family_of
from ..outputs.run_paths import RunPaths



@dataclass(frozen=True)
class IndexModel:
    source: str  # an absolute folder path, or a hub repo id
    folder: Path  # where its files are (the hub cache for a repo id)
    default_name: str


def resolve_model(model: str) -> IndexModel:
    """MODEL as a folder with config.json: a run folder gives its published model."""
    path = Path(model).expanduser()
    if path.is_dir():
        run = RunPaths(path)
        if (run.model / "config.json").is_file():
            folder = run.published_model.resolve()
            return IndexModel(str(folder), folder, path.resolve().name)
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: neither a model folder (config.json and weights) nor a run folder "
                             "with model/ (has the run finished?)")
        folder = path.resolve()
        name = folder.parent.name if folder.name == "model" and folder.parent.name else folder.name
        return IndexModel(str(folder), folder, name)
    folder = W.resolve_model_folder(model)  # a hub repo id (downloaded once), or one line saying why not
    return IndexModel(model, folder, model.rstrip("/").rpartition("/")[2])


def collection_name(name: str) -> str:
    """A collection is also the llm model name mlx-clip/NAME: the registry's rules apply."""
    try:
        return registry.check_name(name)
    except InputError:
        raise InputError(f"--collection {name!r}: use letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit, at most 64 characters (the default is the model folder's name)") from None


def model_identity(model, folder: Path) -> bytes:
    """A digest of the weights files, the family, the size and the image preprocessing."""
    digest = hashlib.sha256()
    family = family_of(model)
    digest.update(json.dumps([family.model_type, model.config.projection_dim,
                              model.image_processor.to_dict()], sort_keys=True, default=str).encode())
    for path in sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")):
        digest.update(path.name.encode())
        hash_file(path, digest)
    return digest.digest()


def check_llm_name(name: str, source: str) -> None:
    """Refuse a NAME whose mlx-clip/NAME llm gives another model: repointing it would silently
    break that model's collections. Writes nothing (said before any fetch)."""
    try:
        current = registry.read_registry().get(name)
    except InputError as err:
        raise InputError(f"cannot register mlx-clip/{name} for llm: {err}") from None
    if current is not None and current.source != registry.resolve_source(source)[0]:
        raise InputError(f"mlx-clip/{name} is registered for {current.source}, not this model; pass another "
                         f"--collection (or: llm mlx-clip register {name} {source} --replace)")


def register_for_llm(name: str, source: str) -> str:
    """Register `source` as mlx-clip/NAME (already loaded here, so not loaded again), after
    check_llm_name."""
    check_llm_name(name, source)
    return registry.register_model(name, source, replace=True, validate=False).model_id
