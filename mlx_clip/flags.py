"""Command-line flags generated from the typed config tree, so each flag's help and default live once.

A dataclass field made with :func:`setting` becomes a flag: `--field-name` unless `flag` names
other spellings, and always also its key in a config file (`--fetch.read-timeout` for
`fetch: {read_timeout: ...}`, shown in --help beside the short spelling); its help, metavar, parser (`type`), `choices` and default come from the field.
A nested dataclass field becomes an argument group titled by its `help`; a field may name
another `group`, and fields sharing an `exclusive` name are mutually exclusive. A bool that
defaults to False is switched on by its flag; one that defaults to True is switched off by its
(`--no-...`) flag. `cli=False` keeps a field off the command line; `save=False` also keeps it out
of config files (callables, test hooks).

Flags default to "not given" (argparse.SUPPRESS), so :func:`given` returns only what the user
typed and :func:`apply` lays it over a config read from a file (`--config`) or the defaults.
The same tree reads and writes nested dicts (:func:`to_dict`, :func:`from_dict`).
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import InputError

_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, help: str = "", *, default_factory: Callable[[], Any] | Any = _MISSING,
            **meta: Any) -> Any:
    """A dataclass field with its CLI metadata (flag, metavar, type, choices, group, exclusive,
    action, from_cli, cli, save); see the module docstring."""
    meta["help"] = help
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def positive_int(text: str) -> int:
    """A flag's whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def margin_text(text: str) -> str:
    """A margin of error in (0, 1), kept as text so the sample size is computed from the exact decimal."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, e.g. 0.025; got {text}")
    return text


def encoding_name(text: str) -> str:
    """A text encoding's canonical name (cp1252, utf-8, ...)."""
    try:
        return codecs.lookup(text).name
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {text!r} (e.g. utf-8, cp1252, latin-1)") from None


def positive_seconds(value: float) -> str | None:
    """A `check`: what is wrong with a number of seconds (0 would hang, a negative one fail every request)."""
    return None if value > 0 and math.isfinite(value) else f"must be a number of seconds above 0, got {value:g}"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar(hint: Any) -> Any:
    """The type a field's text is parsed as: int for `int | None`, str for `list[str]`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (list, tuple) and args:
        return _scalar(args[0])
    if args:
        return _scalar(args[0])
    return hint


def _flags(field: dataclasses.Field) -> list[str]:
    flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
    return [flag] if isinstance(flag, str) else list(flag)


def key_flag(path: str, switches_off: bool = False) -> str:
    """The flag spelled as the setting's key in a config file: `fetch.read_timeout` ->
    `--fetch.read-timeout`; a switch that turns a True setting off gets `no-` before the last
    part (`augment.hflip` -> `--augment.no-hflip`)."""
    head, _, name = path.rpartition(".")
    name = ("no-" if switches_off else "") + name.replace("_", "-")
    return "--" + (f"{head.replace('_', '-')}." if head else "") + name


def setting_of_flag(flag: str) -> str:
    """The setting key a key-spelled flag names (the inverse of :func:`key_flag`)."""
    head, _, name = flag.removeprefix("--").rpartition(".")
    name = name.removeprefix("no-").replace("-", "_")
    return (f"{head.replace('-', '_')}." if head else "") + name


def all_flags(field: dataclasses.Field, path: str, default: Any) -> list[str]:
    """A field's flags: its short spelling(s) first (what messages name), then its key spelling."""
    flags = _flags(field)
    keyed = key_flag(path, switches_off=default is True)
    return flags if keyed in flags else [*flags, keyed]


def _shown(value: Any) -> str:
    """The `(default: x)` of a help line; nothing for None, False and empty lists."""
    if value is None or value is False or value == [] or value == ():
        return ""
    if isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, (list, tuple)):  # as typed: --lora-targets q_proj,v_proj
        value = ",".join(map(str, value))
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 100_000:
        value = f"{value:,}"
    return f" (default: {value})"


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not _MISSING else field.default


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, only: Iterable[str] | None = None,
                         prefix: str = "", _title: str | None = None, _groups: dict | None = None) -> None:
    """Add a flag for each field of `cls` (and of its nested dataclasses, as groups).

    `only` names the top-level fields (or subtrees) to include; the argparse dest is the dotted
    path (`fetch.out`), which :func:`given` hands back.
    """
    groups = {} if _groups is None else _groups
    hints = _hints(cls)
    wanted = set(only) if only is not None else None
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if not meta.get("cli", True) or (wanted is not None and field.name not in wanted):
            continue
        hint, dest, default = hints[field.name], prefix + field.name, _default(field)
        if dataclasses.is_dataclass(hint):
            add_config_arguments(parser, hint, prefix=dest + ".", _title=meta.get("help"), _groups=groups)
            continue
        title = meta.get("group", _title)
        if title not in groups:
            groups[title] = parser.add_argument_group(title) if title else parser
        target = groups[title]
        if "exclusive" in meta:
            key = ("exclusive", meta["exclusive"])
            if key not in groups:
                groups[key] = target.add_mutually_exclusive_group()
            target = groups[key]
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": meta["help"]}
        if _scalar(hint) is bool:
            kwargs["action"] = "store_false" if default else "store_true"
        else:
            kwargs["type"] = meta.get("type", _scalar(hint))
            if "choices" not in meta:  # argparse shows {a,b} for choices; else the name, not the dotted dest
                kwargs["metavar"] = meta.get("metavar", field.name.upper())
            for key in ("choices", "action"):
                if key in meta:
                    kwargs[key] = meta[key]
            kwargs["help"] += _shown(default)
        target.add_argument(*all_flags(field, dest, default), **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """{dotted.name: value} of the config flags the user gave (after each field's `from_cli`);
    an InputError for a value its field's `check` refuses."""
    out = {}
    for path, field in leaf_fields(cls).items():
        if hasattr(args, path):
            value = getattr(args, path)
            problem = field.metadata["check"](value) if "check" in field.metadata else None
            if problem:
                raise InputError(f"{_flags(field)[0]} {problem}")
            out[path] = field.metadata["from_cli"](value) if "from_cli" in field.metadata else value
    return {**_cleared_alternatives(out, leaf_fields(cls)), **out}


def _cleared_alternatives(chosen: dict[str, Any], leaves: dict[str, dataclasses.Field]) -> dict[str, Any]:
    """The defaults of the fields exclusive with a given one (--data clears a config file's manifest)."""
    groups = {(path.rpartition(".")[0], leaves[path].metadata["exclusive"]) for path in chosen
              if "exclusive" in leaves[path].metadata}
    return {path: _default(field) for path, field in leaves.items()
            if (path.rpartition(".")[0], field.metadata.get("exclusive")) in groups}


def leaf_fields(cls: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf field of the tree by its dotted path."""
    out: dict[str, dataclasses.Field] = {}
    hints = _hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            out.update(leaf_fields(hints[field.name], f"{prefix}{field.name}."))
        else:
            out[prefix + field.name] = field
    return out


def flag_of(cls: type, path: str) -> str:
    """The first flag spelling of the field at dotted `path` (for messages)."""
    return _flags(leaf_fields(cls)[path])[0]


def apply(config: Any, values: dict[str, Any]) -> Any:
    """A copy of `config` with {dotted.name: value} set; nested configs are copied, never mutated."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = apply(getattr(config, head), sub)
    return dataclasses.replace(config, **direct)


def to_dict(config: Any) -> dict[str, Any]:
    """The tree as a JSON-ready nested dict (paths as text, tuples as lists, `save=False` fields left out)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        if not field.metadata.get("save", True):
            continue
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def _number_text(text: str, base: type) -> Any:
    """A number written as text in any notation (`1e-4`, `1E3`, `0.5`, `2_000`) as `base`; the
    text itself when it is no number (the caller then names the setting)."""
    try:
        number = float(text.strip())
    except ValueError:
        return text
    if base is int:
        return int(number) if number.is_integer() else text
    return number


def _check(path: str, hint: Any, value: Any, where: str) -> Any:
    """`value` as the field's type, or an InputError naming the file and the setting."""
    args = typing.get_args(hint)
    if value is None and (type(None) in args or hint is type(None)):
        return None
    base = _scalar(hint)
    if any(isinstance(a, type) and typing.get_origin(a) is None and a not in (Path, type(None)) and isinstance(value, a) and
           not (isinstance(value, bool) and a is not bool) for a in args):
        return value  # one of a union's types (`str | float` for a margin)
    origins = {typing.get_origin(a) for a in args} | {typing.get_origin(hint)}
    if isinstance(value, list) and (list in origins or tuple in origins):
        checked = [_check(path, base, v, where) for v in value]
        return tuple(checked) if tuple in origins and list not in origins else checked
    if base in (int, float) and isinstance(value, str):
        value = _number_text(value, base)  # YAML reads `1e-4` (no dot) as text
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if base is Path and isinstance(value, str):
        return Path(value)
    ok = isinstance(value, base) and not (base in (int, float) and isinstance(value, bool))
    if not ok or (base is float and not math.isfinite(value)):
        wanted = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}.get(base, str(base))
        raise InputError(f"{where}: setting '{path}' must be {wanted}, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config", prefix: str = "") -> Any:
    """`cls` from a nested dict: missing keys take defaults; an unknown key or a value of the
    wrong type raises one InputError line naming it."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: '{prefix.rstrip('.') or 'the file'}' must be a mapping of settings, got {data!r}")
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("save", True)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(f"{where}: unknown setting '{prefix}{unknown[0]}' (known: {', '.join(known)})")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, where, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(prefix + name, hint, value, where)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise InputError(f"{where}: {err}") from None


def rows(config: Any) -> list[tuple[str, Any]]:
    """(dotted.name, value) for each saved leaf, in tree order: the config as a readable table."""
    out: list[tuple[str, Any]] = []

    def walk(value: Any, prefix: str) -> None:
        for key, item in value.items():
            if isinstance(item, dict):
                walk(item, f"{prefix}{key}.")
            else:
                out.append((prefix + key, item))

    walk(to_dict(config), "")
    return out
