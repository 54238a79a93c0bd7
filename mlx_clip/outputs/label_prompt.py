"""The zero-shot label prompt a fine-tuned model was scored with ("a photo of {label}", or the
run's --label-prompt), recorded where the model goes: its model card's front matter
(`label_prompt:`, written by finetune and by convert/push for a run), so that the curator's label
suggestions (search.py --curate) ask the model in the words it was trained and judged with, also
after the folder was copied away from its run. Runs made before the card held it are read from
their run folder's config.json (model/ sits inside runs/NAME).

Both files may come from someone else: only a bounded read, YAML's safe loader, and a prompt
that is a string holding {label} (or a short list of them) is taken; anything else is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_small_text
from .run_paths import RunPaths

CARD_KEY = "label_prompt"  # the front matter key: the same word as the flag and config.json's key
MAX_FILE_BYTES = 4 << 20  # a card or config.json larger than this is not read (a real one is ~20 KB)
MAX_PROMPTS, MAX_PROMPT_CHARS = 64, 1000


def usable_label_prompt(prompt: Any) -> bool:
    """A prompt (or an ensemble of them) that names where the label goes."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    return (isinstance(prompts, list) and 0 < len(prompts) <= MAX_PROMPTS
            and all(isinstance(p, str) and "{label}" in p and len(p) <= MAX_PROMPT_CHARS for p in prompts))


def _small_text(path: Path) -> str | None:
    """The file's text, or None for one that is missing, unreadable or over MAX_FILE_BYTES."""
    try:
        return read_small_text(path, MAX_FILE_BYTES)
    except (OSError, UnicodeDecodeError, InputError):
        return None


def _from_card(folder: Path) -> Any:
    from huggingface_hub import ModelCard

    text = _small_text(folder / "README.md")
    if text is None:
        return None
    try:
        return ModelCard(text).data.to_dict().get(CARD_KEY)
    except Exception:  # noqa: BLE001  (a card we cannot parse records nothing usable)
        return None


def _from_run(folder: Path) -> Any:
    run = RunPaths(folder.parent)
    if folder.name != run.model.name:
        return None
    text = _small_text(run.config)
    try:
        config = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return None
    return config.get(CARD_KEY) if isinstance(config, dict) else None


def recorded_label_prompt(folder: str | Path) -> tuple[str | list[str], str] | None:
    """(prompt, where it was read) for a model folder that records one; None otherwise (a hub
    model, a converted base model, an unusable value)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for read, where in ((_from_card, folder / "README.md"), (_from_run, RunPaths(folder.parent).config)):
        prompt = read(folder)
        if usable_label_prompt(prompt):
            return prompt, str(where)
    return None
