"""The registry of fine-tuned models that the llm plugin serves: one JSON file, no llm needed.

Each entry maps a NAME to a model folder (stored as an absolute path) or a Hugging Face hub
repo id (stored as given; downloaded on first use, then cached). llm sees the model as
`mlx-clip/NAME`: the prefix keeps it apart from other plugins' models (llm-clip's `clip`
among them), and a collection remembers that id, so `llm similar` always embeds its query
with the model the collection was built with.

The file is `mlx-clip-models.json` in llm's user directory (`LLM_USER_PATH` when set),
rewritten atomically under a lock:

    {"version": 1, "models": {"NAME": {"source": "/abs/path/or/owner/repo", "kind": "local"}}}

`finetune.py --register NAME` calls `register_model(NAME, model_folder, replace=True)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import InputError

REGISTRY_FILE = "mlx-clip-models.json"
MODEL_ID_PREFIX = "mlx-clip/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    source: str
    """An absolute folder path (kind "local") or a hub repo id (kind "hub")."""
    kind: str
    registered: float = 0.0

    @property
    def model_id(self) -> str:
        """The id llm knows this model by: `mlx-clip/NAME`."""
        return MODEL_ID_PREFIX + self.name

    def to_json(self) -> dict:
        return {"source": self.source, "kind": self.kind, "registered": self.registered}


def user_dir() -> Path:
    """llm's user directory: `llm.user_dir()`, or the same place computed without llm installed."""
    try:
        import llm
    except ImportError:
        env = os.environ.get("LLM_USER_PATH")
        if env:
            path = Path(env)
        else:  # what click.get_app_dir("io.datasette.llm") gives
            import sys

            if sys.platform == "darwin":
                path = Path.home() / "Library" / "Application Support" / "io.datasette.llm"
            elif sys.platform.startswith("win"):
                path = Path(os.environ.get("APPDATA") or Path.home()) / "io.datasette.llm"
            else:
                path = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "io.datasette.llm"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(llm.user_dir())


def registry_path(directory: str | Path | None = None) -> Path:
    return Path(directory if directory is not None else user_dir()) / REGISTRY_FILE


def check_name(name: str) -> str:
    """A registry NAME: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(
            f"{name!r}: not a valid model name (use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, at most 64 characters)"
        )
    return name


def name_from_model_id(name_or_id: str) -> str:
    """`mlx-clip/NAME` or `NAME` -> `NAME`."""
    return name_or_id[len(MODEL_ID_PREFIX):] if name_or_id.startswith(MODEL_ID_PREFIX) else name_or_id


def read_registry(directory: str | Path | None = None) -> dict[str, RegisteredModel]:
    """All registered models by NAME; a missing file is an empty registry."""
    path = registry_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        models = data["models"]
        return {
            check_name(name): RegisteredModel(
                name, str(entry["source"]), str(entry.get("kind", "local")), float(entry.get("registered", 0.0))
            )
            for name, entry in models.items()
        }
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, InputError) as err:
        raise InputError(f"{path}: not a valid model registry ({err}); fix or delete the file") from None


def get_model(name_or_id: str, directory: str | Path | None = None) -> RegisteredModel:
    """The registered model NAME (or `mlx-clip/NAME`); InputError when there is none."""
    name = name_from_model_id(name_or_id)
    models = read_registry(directory)
    if name not in models:
        known = ", ".join(sorted(models)) or "none registered"
        raise InputError(f"{name}: no model registered under this name (registered: {known})")
    return models[name]


def resolve_source(path_or_repo: str | Path) -> tuple[str, str]:
    """(source, kind): an existing folder as an absolute path, or `owner/name` as a hub repo id."""
    from .weights import _looks_like_repo_id

    path = Path(path_or_repo).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path}: is a file; register the model folder (config.json and weights)")
        return str(path.resolve()), "local"
    text = str(path_or_repo)
    if _looks_like_repo_id(text):
        return text, "hub"
    raise InputError(f"{text}: no such model folder (and not a Hugging Face hub repo id like owner/name)")


def validate_folder(folder: str | Path) -> None:
    """Load the folder as CLIP (config, weights, shapes); InputError says what is wrong."""
    from .clip import load

    load(folder)


def register_model(name: str, path: str | Path, *, replace: bool = False, validate: bool = True,
                   directory: str | Path | None = None) -> RegisteredModel:
    """Register the model at `path` (a folder, or a hub repo id) as NAME; returns the entry.

    A local folder is stored as an absolute path and, with `validate`, must load as CLIP.
    A hub repo id is stored as given and downloaded on first use. An existing NAME is only
    overwritten with `replace=True`: collections embedded with the old model keep its vectors,
    so reusing a name for another model should be a deliberate act.
    """
    check_name(name)
    source, kind = resolve_source(path)
    if validate and kind == "local":
        validate_folder(source)
    entry = RegisteredModel(name, source, kind, time.time())
    with _locked(directory) as file:
        models = read_registry(directory)
        old = models.get(name)
        if old is not None and not replace and old.source != source:
            raise InputError(
                f"{name}: already registered for {old.source}; choose another name, or replace it "
                "(--replace) and re-embed the collections made with the old model"
            )
        models[name] = entry
        _write(file, models)
    return entry


def remove_model(name_or_id: str, directory: str | Path | None = None) -> RegisteredModel:
    """Forget NAME (the model files stay where they are); returns the removed entry."""
    with _locked(directory) as file:
        entry = get_model(name_or_id, directory)
        models = read_registry(directory)
        del models[entry.name]
        _write(file, models)
    return entry


def _write(path: Path, models: dict[str, RegisteredModel]) -> None:
    data = {"version": 1, "models": {name: models[name].to_json() for name in sorted(models)}}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: str | Path | None) -> Iterator[Path]:
    """Serialise read-modify-write of the registry (two fine-tuning runs registering at once)."""
    path = registry_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the write itself is still atomic
        yield path
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
