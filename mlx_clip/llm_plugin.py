"""llm plugin: every registered model becomes an llm embedding model `mlx-clip/NAME`, run with MLX.

    llm mlx-clip register NAME PATH_OR_REPO     # a folder (MLX or HF) or an owner/name hub repo;
                                                # loaded and tried first (--lazy: not), -a ALIAS
    llm mlx-clip list
    llm mlx-clip remove NAME
    llm embed-multi photos -m mlx-clip/NAME --files DIR '*.jpg' --binary
    llm similar photos -c 'a red bicycle'

Text is embedded with the text tower, bytes (`--binary`) are decoded as images with PIL.
Each model is loaded once per process, on its first embedding, and no PyTorch is involved.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterable, Iterator

import click
import llm
import mlx.core as mx
import numpy as np

from . import registry
from .errors import InputError
from .data.decode_threads import ordered_map

_loaded: dict[str, object] = {}  # source -> CLIP, once per process
_load_lock = threading.Lock()
_warned: set[str] = set()


class EmbeddingError(llm.ModelError, click.ClickException):
    """A one-line failure: llm's CLI prints `Error: ...` (a ClickException), Python callers catch llm.ModelError."""

    def __init__(self, message: str):
        click.ClickException.__init__(self, message)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        click.echo(f"Warning: {message}", err=True)


@llm.hookimpl
def register_embedding_models(register):
    """Serve every readable entry; a broken registry or entry warns once and never stops llm."""
    try:
        found = registry.load_registry()
    except InputError as err:
        _warn_once(f"mlx-clip: {err}")
        return
    for problem in found.problems:
        _warn_once(f"mlx-clip: {problem}")
    for entry in found.models.values():
        register(MLXClipEmbeddingModel(entry), aliases=entry.aliases)


class MLXClipEmbeddingModel(llm.EmbeddingModel):
    supports_text = True
    supports_binary = True
    batch_size = 32

    def __init__(self, entry: registry.RegisteredModel):
        self.entry = entry
        self.model_id = entry.model_id

    def clip(self):
        """The MLX model, loaded on first use and shared by every name registered for the same source."""
        source = self.entry.source
        with _load_lock:
            if source not in _loaded:
                import mlx_clip

                try:
                    _loaded[source] = mlx_clip.load(source)
                except InputError as err:
                    raise EmbeddingError(f"{self.model_id}: cannot load the model: {err}") from None
            return _loaded[source]

    def embed_batch(self, items: Iterable[str | bytes], *, key: str | None = None) -> Iterator[list[float]]:
        items = list(items)
        model = self.clip()
        texts = [(i, item) for i, item in enumerate(items) if isinstance(item, str)]
        processor = model.image_processor

        def pixels(pair: tuple[int, bytes]):
            # On a decode thread (data/decode_threads.py, as the index does); resized as soon as decoded:
            # a batch of 32 full-size photos would take gigabytes.
            return processor.normalize(np.asarray(processor.resize_and_crop(_decode_image(pair[1]))))

        binary = [(i, item) for i, item in enumerate(items) if not isinstance(item, str)]
        decoded = []
        for (i, data), result in ordered_map(pixels, binary):
            if isinstance(result, _Unreadable):  # named here: click's context (the files' folder) is this thread's
                raise _unreadable(data, i, len(items), self.model_id, str(result))
            if isinstance(result, Exception):
                raise result
            decoded.append((i, result))
        out: list[list[float] | None] = [None] * len(items)
        try:
            if texts:
                for (i, _), vector in zip(texts, model.embed_texts([t for _, t in texts])):
                    out[i] = vector.tolist()
            if decoded:
                vectors = np.array(model.embed_pixels(np.stack([p for _, p in decoded])).astype(mx.float32))
                for (i, _), vector in zip(decoded, vectors):
                    out[i] = vector.tolist()
        except InputError as err:
            raise EmbeddingError(f"{self.model_id}: {err}") from None
        yield from out  # type: ignore[misc]


class _Unreadable(Exception):
    """Bytes that are not a readable image; the message is the reason."""


def _decode_image(data: bytes):
    """Bytes -> RGB PIL image (EXIF orientation applied) within the pixel budget, checked from the
    header before decoding (models/image_open.py); _Unreadable(reason) for a bad item."""
    from .models.image_open import open_image_bounded

    try:
        return open_image_bounded(data).image
    except InputError as err:
        raise _Unreadable(str(err).split(": ", 1)[-1]) from None


def _unreadable(data: bytes, index: int, count: int, model_id: str, reason: str) -> EmbeddingError:
    """The one line naming a bad item: its file when `embed-multi --files` read it, else its place."""
    path = _file_holding(data)
    if path is None:
        where = (f"the input ({len(data):,} bytes)" if count == 1 else
                 f"item {index + 1} of {count} in this batch ({len(data):,} bytes)")
        return EmbeddingError(f"{model_id}: {where} is not a readable image ({reason})")
    # llm has no option to skip an item a plugin cannot embed: the run stops, earlier batches stay stored.
    return EmbeddingError(f"{model_id}: {path} is not a readable image ({reason}); fix or remove the file "
                          "and run again (files already stored are not embedded again)")


def _file_holding(data: bytes) -> Path | None:
    """The file among `embed-multi --files DIR PATTERN` whose bytes are `data`, or None.

    llm passes plugins the values only. The command's own parameters are public through
    click's current context, so the folders it read are searched (same size first, then the
    bytes); this runs once, when a run is about to stop on a bad item.
    """
    context = click.get_current_context(silent=True)
    files = context.params.get("files") if context is not None else None
    for directory, pattern in files or ():
        for path in Path(directory).glob(pattern):
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
                    return path
    return None


@llm.hookimpl
def register_commands(cli):
    @cli.group(name="mlx-clip")
    def mlx_clip_group():
        """Fine-tuned CLIP models embedded with MLX: register, list, remove.

        A model registered as NAME is the embedding model mlx-clip/NAME:

        \b
            llm mlx-clip register holiday runs/holiday/model
            llm embed-multi photos -m mlx-clip/holiday --files photos '*.jpg' --binary
            llm similar photos -c 'sunset over the sea'
        """

    @mlx_clip_group.command(name="register")
    @click.argument("name")
    @click.argument("path_or_repo")
    @click.option("aliases", "-a", "--alias", multiple=True,
                  help="Another name for the model in llm (repeatable); none given keeps the current ones.")
    @click.option("--lazy", is_flag=True,
                  help="Register without loading the model now (a hub repo is then downloaded on first use).")
    @click.option("--replace", is_flag=True,
                  help="Point an existing NAME at another model (collections embedded with the old one "
                       "keep its vectors: re-embed them).")
    def register_cmd(name, path_or_repo, aliases, lazy, replace):
        """Register the model folder (MLX or HF) or hub repo PATH_OR_REPO as mlx-clip/NAME.

        The model is loaded (a hub repo downloaded) and embeds one string before the name is
        saved, unless --lazy. A local folder is stored as an absolute path; anything else of
        the form owner/name is taken as a Hugging Face hub repo id.
        """
        try:
            old = registry.read_registry().get(name)
            entry = registry.register_model(name, path_or_repo, replace=replace, validate=not lazy,
                                            aliases=list(aliases) or None)
        except InputError as err:
            raise click.ClickException(f"cannot register {name}: {err}") from None
        if old is not None and old.source != entry.source:
            _warn_collections(entry.model_id, "hold vectors from the previous model; re-embed them")
        where = "Hugging Face hub repo" if entry.kind == "hub" else "folder"
        if lazy:
            where += ", not loaded yet (--lazy)"
        also = f", also called {', '.join(entry.aliases)}" if entry.aliases else ""
        click.echo(f"Registered {entry.model_id} -> {entry.source} ({where}){also}")

    @mlx_clip_group.command(name="list")
    @click.option("--json", "as_json", is_flag=True, help="Output as JSON.")
    def list_cmd(as_json):
        """List registered models: llm model id, source, and whether a local folder is missing."""
        try:
            found = registry.load_registry()
        except InputError as err:
            raise click.ClickException(str(err)) from None
        for problem in found.problems:
            _warn_once(f"mlx-clip: {problem}")
        models = found.models
        if as_json:
            import json

            click.echo(json.dumps([dict(model_id=m.model_id, name=m.name, **m.to_json())
                                   for m in models.values()], indent=2))
            return
        if not models:
            click.echo("No models registered: llm mlx-clip register NAME PATH_OR_REPO")
        for entry in models.values():
            note = "  (hub)" if entry.kind == "hub" else ""
            if entry.kind == "local" and not Path(entry.source).is_dir():
                note = "  (MISSING: folder not found)"
            if entry.aliases:
                note += f"  aliases: {', '.join(entry.aliases)}"
            click.echo(f"{entry.model_id}  {entry.source}{note}")

    @mlx_clip_group.command(name="remove")
    @click.argument("name")
    def remove_cmd(name):
        """Forget NAME (or mlx-clip/NAME); the model files are left alone."""
        try:
            entry = registry.remove_model(name)
        except InputError as err:
            raise click.ClickException(str(err)) from None
        if entry is None:
            click.echo(f"Removed the unreadable entry {name}")
            return
        click.echo(f"Removed {entry.model_id} ({entry.source} is left as it is)")
        _warn_collections(entry.model_id, "cannot be searched until the name is registered again")


def collections_using(model_id: str) -> list[str]:
    """Names of the collections in llm's default embeddings.db embedded with `model_id`."""
    import sqlite3

    path = registry.user_dir() / "embeddings.db"
    if not path.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return [row[0] for row in db.execute("select name from collections where model = ? order by name",
                                                  (model_id,))]
    except sqlite3.Error:
        return []


def _warn_collections(model_id: str, consequence: str) -> None:
    names = collections_using(model_id)
    if names:
        click.echo(f"Warning: collections embedded with {model_id} ({', '.join(names)}) {consequence}", err=True)
