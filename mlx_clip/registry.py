"""The registry of fine-tuned models that the llm plugin serves: one JSON file, no llm needed.

Each entry maps a NAME to a model folder (stored as an absolute path) or a Hugging Face hub
repo id (stored as given; downloaded when registered, or on first use with `--lazy`, then cached). llm sees the model as
`mlx-clip/NAME`: the prefix keeps it apart from other plugins' models (llm-clip's `clip`
among them), and a collection remembers that id, so `llm similar` always embeds its query
with the model the collection was built with.

The file is `mlx-clip-models.json` in llm's user directory (`LLM_USER_PATH` when set),
rewritten atomically under a lock:

    {"version": 1, "models": {"NAME": {"source": "/abs/path/or/owner/repo", "kind": "local",
                                       "registered": 1714521600.0, "aliases": ["short"]}}}

A hand-edited entry that cannot be read is skipped with one line naming the file and the entry
(`load_registry().problems`) and kept as it is when the file is rewritten; the other entries
are served. `finetune.py --register NAME` calls `register_model(NAME, model_folder, replace=True)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .io import write_json
from .models.weights import is_repo_id

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
    aliases: tuple[str, ...] = ()
    """Other names llm accepts for this model (`llm embed -m ALIAS`)."""

    @property
    def model_id(self) -> str:
        """The id llm knows this model by: `mlx-clip/NAME`."""
        return MODEL_ID_PREFIX + self.name

    def to_json(self) -> dict:
        return {"source": self.source, "kind": self.kind, "registered": self.registered,
                "aliases": list(self.aliases)}


@dataclass(frozen=True)
class Registry:
    """The registry file as read: the usable entries, and the ones that are not with why."""

    path: Path
    models: dict[str, RegisteredModel] = field(default_factory=dict)
    invalid: dict[str, object] = field(default_factory=dict)
    """Raw entries that could not be read: written back untouched, so a hand edit is never lost."""
    problems: list[str] = field(default_factory=list)
    """One line per skipped entry, naming the file and the entry."""


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


def load_registry(directory: str | Path | None = None) -> Registry:
    """The registry with its unreadable entries set apart; InputError only when the whole file is unreadable."""
    path = registry_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Registry(path)
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the model registry ({err}); fix or delete the file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not a valid model registry (not JSON: {err}); fix or delete the file") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise InputError(f'{path}: not a valid model registry (no "models" object); fix or delete the file')
    found = Registry(path)
    for name, entry in models.items():
        try:
            found.models[name] = _parse_entry(name, entry)
        except (InputError, ValueError) as err:
            found.invalid[name] = entry
            found.problems.append(f"{path}: entry {name!r}: {err}; skipped (fix it, or: llm mlx-clip remove {name})")
    return found


def _parse_entry(name: str, entry: object) -> RegisteredModel:
    """One registry entry; ValueError says which field is wrong."""
    check_name(name)
    if not isinstance(entry, dict):
        raise ValueError(f"is {_show(entry)}, not an object")
    source, kind = entry.get("source"), entry.get("kind", "local")
    registered, aliases = entry.get("registered", 0.0), entry.get("aliases", [])
    if not isinstance(source, str) or not source:
        raise ValueError(f"field 'source' is {_show(source)}, not a model folder or hub repo id")
    if kind not in ("local", "hub"):
        raise ValueError(f"field 'kind' is {_show(kind)}, not \"local\" or \"hub\"")
    if kind == "local" and not Path(source).is_absolute():
        raise ValueError(f"field 'source' is {_show(source)}, not an absolute folder path")
    if isinstance(registered, bool) or not isinstance(registered, (int, float)):
        raise ValueError(f"field 'registered' is {_show(registered)}, not a number (seconds since 1970)")
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise ValueError(f"field 'aliases' is {_show(aliases)}, not a list of names")
    return RegisteredModel(name, source, kind, float(registered), tuple(aliases))


def _show(value: object) -> str:
    text = "missing" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def read_registry(directory: str | Path | None = None) -> dict[str, RegisteredModel]:
    """The usable registered models by NAME; a missing file is an empty registry."""
    return load_registry(directory).models


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
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path}: is a file; register the model folder (config.json and weights)")
        return str(path.resolve()), "local"
    text = str(path_or_repo)
    if is_repo_id(text):
        return text, "hub"
    raise InputError(f"{text}: no such model folder (and not a Hugging Face hub repo id like owner/name)")


def check_model(source: str) -> None:
    """Load the model (downloading a hub repo) and embed one string; InputError says what is wrong.

    Done before a name is saved, so a typo in a path or repo id fails at `register`, not at the
    first `llm embed`.
    """
    from .models.clip import load

    load(source).embed_texts(["a photo"])


def served_elsewhere() -> dict[str, str]:
    """Every name (model id or alias, llm's aliases.json included) under which llm serves an
    embedding model of another plugin, mapped to that model's id; empty without llm. An alias
    such as `ada-002` or `clip` would otherwise take the other plugin's model away from its users."""
    try:
        import llm
    except ImportError:
        return {}
    taken: dict[str, str] = {}
    try:
        everything = llm.get_embedding_models_with_aliases()
    except Exception:  # noqa: BLE001  (a broken plugin stops nothing here: llm itself reports it)
        return {}
    for served in everything:
        model_id = str(served.model.model_id)
        if not model_id.startswith(MODEL_ID_PREFIX):
            for alias in (model_id, *served.aliases):
                taken.setdefault(str(alias), model_id)
    return taken


def check_free(name: str, aliases: list[str] | tuple[str, ...] = (), *, replace: bool = False,
               directory: str | Path | None = None) -> None:
    """Refuse, before any work, a NAME or alias that another llm plugin serves, and a NAME already
    registered here unless `replace` (finetune.py --register checks this before training)."""
    check_name(name)
    for alias in aliases:
        if not alias.strip() or alias.startswith(MODEL_ID_PREFIX):
            raise InputError(f"{alias!r}: not a valid alias (a non-empty name without the {MODEL_ID_PREFIX} prefix)")
    taken = served_elsewhere()
    for wanted in (MODEL_ID_PREFIX + name, *aliases):
        if wanted in taken:
            raise InputError(f"{wanted!r}: llm already serves {taken[wanted]} under this name (another plugin); "
                             "choose another name")
    old = read_registry(directory).get(name)
    if old is not None and not replace:
        raise InputError(f"{name}: already registered for {old.source}; choose another name, or replace it "
                         "(--replace) and re-embed the collections made with the old model")


def register_model(name: str, path: str | Path, *, replace: bool = False, validate: bool = True,
                   aliases: list[str] | tuple[str, ...] | None = None,
                   directory: str | Path | None = None) -> RegisteredModel:
    """Register the model at `path` (a folder, or a hub repo id) as NAME; returns the entry.

    A local folder is stored as an absolute path, a hub repo id as given. With `validate` the
    model is loaded (a hub repo downloaded) and embeds one string first. An existing NAME is
    only overwritten with `replace=True`: collections embedded with the old model keep its
    vectors, so reusing a name for another model should be a deliberate act. `aliases=None`
    keeps the aliases NAME already has; a list replaces them.
    """
    source, kind = resolve_source(path)
    check_free(name, aliases or (), replace=True, directory=directory)  # the same source: checked below
    if validate:
        check_model(source)
    with _locked(directory) as file:
        found = load_registry(directory)
        models = found.models
        old = models.get(name)
        if old is not None and not replace and old.source != source:
            raise InputError(
                f"{name}: already registered for {old.source}; choose another name, or replace it "
                "(--replace) and re-embed the collections made with the old model"
            )
        if aliases is None:
            aliases = old.aliases if old is not None else ()
        for alias in aliases:
            taken = [m.name for m in models.values() if m.name != name and (alias == m.name or alias in m.aliases)]
            if taken:
                raise InputError(f"{alias!r}: already names {MODEL_ID_PREFIX}{taken[0]}; choose another alias")
        entry = RegisteredModel(name, source, kind, time.time(), tuple(dict.fromkeys(aliases)))
        models[name] = entry
        found.invalid.pop(name, None)
        _write(file, found)
    return entry


def remove_model(name_or_id: str, directory: str | Path | None = None) -> RegisteredModel | None:
    """Forget NAME (the model files stay where they are); returns the entry, None for an unreadable one."""
    name = name_from_model_id(name_or_id)
    with _locked(directory) as file:
        found = load_registry(directory)
        if name in found.invalid:
            del found.invalid[name]
            _write(file, found)
            return None
        entry = get_model(name_or_id, directory)
        del found.models[entry.name]
        _write(file, found)
    return entry


def _write(path: Path, found: Registry) -> None:
    models = {name: entry.to_json() for name, entry in found.models.items()}
    models.update(found.invalid)
    data = {"version": 1, "models": {name: models[name] for name in sorted(models)}}
    write_json(path, data)


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
