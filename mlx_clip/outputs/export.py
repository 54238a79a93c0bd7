"""Write a fine-tuned MLX model (CLIP or SigLIP) as a Hugging Face folder that transformers,
sentence-transformers (and so `llm-clip`) load: model.safetensors with HF names and layouts, config.json, tokenizer,
preprocessor_config.json, and the sentence-transformers module files."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from ..models import weights as W
from ..io import fsync_folder, write_json, write_safetensors
from ..models import siglip_tokenizer, tokenizer
from ..models.clip import CLIP, SigLIP, dtype_name
from ..models.family import family_of
from ..models.lora import merged_weights
from .run_paths import RunPaths

CARD = "README.md"  # the model card: written by the run or the push, never removed by an export
# Every file an export (of either family) may write: what the hub upload takes (with the card).
EXPORT_FILES = frozenset({W.HF_WEIGHTS, "config.json", "preprocessor_config.json", *tokenizer.TOKENIZER_FILES,
                          *siglip_tokenizer.TOKENIZER_FILES, "modules.json", "sentence_bert_config.json",
                          "config_sentence_transformers.json"})
OTHER_WEIGHTS = frozenset({W.MLX_WEIGHTS, W.HF_INDEX, W.HF_PICKLE})  # loaders read these too: never left behind
SHARDS = "model-*-of-*.safetensors"
STAGING = ".export-staging.part"  # inside the folder (same disk, so the moves are renames)


def hf_config(model: CLIP | SigLIP) -> dict:
    family = family_of(model)
    config = {k: v for k, v in model.config.raw.items() if k != "mlx_clip_dtype"}
    config.setdefault("architectures", [family.architecture])
    config["model_type"] = family.model_type
    dtype = dtype_name(model.dtype)
    config["dtype"] = dtype
    config.pop("torch_dtype", None)
    return config


def export_hf(model: CLIP | SigLIP, path: str | Path) -> Path:
    """Write `model` as an HF + sentence-transformers folder at `path`; returns the folder.

    The files are written into a staging folder inside `path`, then moved over the old ones, and
    every file an export or a loader knows (EXPORT_FILES, other weight layouts, shards) that this
    export did not write is removed: an old mlx_model.safetensors or sharded index would otherwise
    be what loaders read. Other files in the folder are the user's and stay.
    On a terminal a bar names the step: the weights (~600 MB for ViT-B/32) take the time."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / STAGING
    if staging.is_symlink() or staging.is_file():  # not ours: never followed
        staging.unlink()
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted export's
    staging.mkdir()
    _write_files(model, staging, folder.name)
    written = sorted(p.name for p in staging.iterdir())
    for name in written:
        os.replace(staging / name, folder / name)
    staging.rmdir()
    stale = (EXPORT_FILES | OTHER_WEIGHTS) - set(written) - {CARD}
    for old in [folder / name for name in sorted(stale)] + sorted(folder.glob(SHARDS)):
        if old.is_file() or old.is_symlink():
            old.unlink()
    fsync_folder(folder)
    return folder


def _write_files(model: CLIP | SigLIP, folder: Path, title: str) -> None:
    """The tokenizer's files first (their max length capped), then every other file's content,
    then the writes; the weights take the time."""
    from tqdm import tqdm

    with tqdm(total=3, desc=f"export {title}", unit="step", leave=False,
              disable=not sys.stderr.isatty()) as bar:
        bar.set_postfix_str("tokenizer and configs")
        if model.has_tokenizer:
            model.tokenizer.save(folder)
            cap_model_max_length(folder / "tokenizer_config.json", model.config.text.max_position_embeddings)
        config = hf_config(model)
        sentence_transformers = family_of(model).sentence_transformers_files(model.config.text.max_position_embeddings)
        write_json(folder / "config.json", config)
        write_json(folder / "preprocessor_config.json", model.image_processor.to_dict())
        bar.update()
        bar.set_postfix_str("weights")
        weights = W.mlx_to_hf(merged_weights(model))  # LoRA adapters folded in: a plain CLIP
        write_safetensors(folder / W.HF_WEIGHTS, weights, {"format": "pt"})
        bar.update()
        bar.set_postfix_str("sentence-transformers files")
        for name, content in sentence_transformers.items():
            write_json(folder / name, content)
        bar.update()


def save_run_model(model: CLIP | SigLIP, path: str | Path) -> Path:
    """Save a run's best model in the one folder every consumer takes (export_hf's layout; an old
    run resumed here has MLX weights in that folder, which export_hf removes)."""
    return export_hf(model, path)


def one_model_folder(model: CLIP | SigLIP, paths: RunPaths, mix: dict | None = None) -> list[str]:
    """model/ holds a finished run's one model: `model` when it is the picked WiSE-FT `mix`; a
    resumed old run (MLX model/ plus an HF copy in export/) ends with the one model/ of new runs,
    its best model rewritten in HF layout there and the copy, now stale, removed. The lines to say."""
    said = []
    if mix or paths.old_layout:
        save_run_model(model, paths.model)
    if mix:
        said.append(f"wise-ft: kept a = {mix['alpha']:g} ({mix['why']}); {paths.model} holds that mix")
    if paths.export.is_dir():
        shutil.rmtree(paths.export)
        said.append(f"removed {paths.export} (a second copy of the model): {paths.model} now holds it for every use")
    return said


def cap_model_max_length(path: Path, positions: int) -> None:
    """Set `model_max_length` to the text model's positions when it is missing or larger.

    transformers truncates to `model_max_length`; a source without one (transformers then
    assumes 1e30) makes sentence-transformers crash on a caption over 77 tokens instead of
    truncating it as the hub's CLIP repositories do.
    """
    config = json.loads(path.read_text(encoding="utf-8"))
    current = config.get("model_max_length")
    if isinstance(current, (int, float)) and not isinstance(current, bool) and current <= positions:
        return
    config["model_max_length"] = positions
    write_json(path, config)
