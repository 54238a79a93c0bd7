"""CardInfo: what a model card says (base model, licence, metrics, data, config ...), built from
plain data or from a run folder; model_card.py renders it and card_sections.py writes its parts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError
from ..io import read_small_text


@dataclass
class CardInfo:
    """What a card says. Everything is optional; `from_dict` / `from_run` build one from plain data."""

    base_model: str | None = None
    """Hub repo id (or local path) of the model that was fine-tuned or converted."""
    base_model_on_hub: bool = False
    """Whether base_model is a hub repo id (linked, and in the front matter); model_card.resolve decides it."""
    repo_id: str | None = None
    """Where the model lives on the hub; the usage snippets use it."""
    license: str | None = None
    """SPDX-like hub licence id; default: the base model's licence if known, else "other"."""
    model_name: str | None = None
    datasets: list[str] | None = None
    """Hub dataset ids (front matter `datasets`)."""
    config: dict | None = None
    metrics: dict | None = None
    data: dict | None = None
    caption_templates: list[str] | None = None
    tags: list[str] = field(default_factory=list)
    language: str | list[str] | None = None
    description: str | None = None
    """A paragraph of your own at the top of the card."""
    model_type: str | None = None
    """The model family's config.json model_type ("clip", "siglip"); None: CLIP."""

    @classmethod
    def from_dict(cls, info: Mapping[str, Any] | "CardInfo" | None) -> "CardInfo":
        if info is None:
            return cls()
        if isinstance(info, CardInfo):
            return info
        if not isinstance(info, Mapping):
            raise InputError(f"model card info must be a dict or CardInfo, not {type(info).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(info) - names)
        if unknown:
            raise InputError(f"model card info: unknown field(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(names))})")
        return cls(**{k: v for k, v in info.items() if v is not None or k != "tags"})

    @classmethod
    def from_run(cls, run_folder: str | Path, **overrides: Any) -> "CardInfo":
        """Read `config.json`, `metrics.json` and (if present) `data.json` of a run folder.

        The one owner of what a card says about a run: finetune's own card and convert.py's
        card for the same run folder are both built here. A finetune run's metrics.json (its
        per-epoch `history`) becomes before/after on its held-out test set when it has one, else
        validation's epoch 0 and best epoch; the config's `resolved` block stays in config.json.
        """
        from .run_paths import RunPaths

        paths = RunPaths(Path(run_folder))
        parts: dict[str, Any] = {}
        for key, path in (("config", paths.config), ("metrics", paths.metrics), ("data", paths.card_data)):
            if path.is_file():
                try:
                    parts[key] = json.loads(read_small_text(path))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise InputError(f"{path}: not valid JSON ({err})") from None
        if isinstance(parts.get("metrics"), Mapping) and isinstance(parts["metrics"].get("history"), list):
            parts["metrics"] = run_metrics(parts["metrics"])
            parts["config"] = {k: v for k, v in (parts.get("config") or {}).items() if k != "resolved"}
        model_config = paths.model / "config.json"
        if model_config.is_file():
            try:
                parts["model_type"] = json.loads(read_small_text(model_config)).get("model_type")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                pass  # loading the model says what is wrong with it
        parts.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(parts)


def run_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A finetune run's metrics.json -> the card's before/after (test set first, else validation)."""
    test = metrics.get("test")
    judged = {key: metrics[key] for key in ("verdict", "retention", "wise_ft") if metrics.get(key)}
    if test:
        return {"before": test["before"], "after": test["after"], "val_size": test["size"], "set": "test",
                "warnings": metrics.get("warnings") or [], **judged}
    history = metrics["history"]
    before = history[0] if history and history[0].get("epoch") == 0 else {}
    after = next((h for h in history if h.get("epoch") == metrics.get("best_epoch")), None) or {}
    return {"before": before, "after": after, "val_size": metrics.get("val_records"), "set": "validation",
            "picked_epoch": True, "warnings": metrics.get("warnings") or [], **judged}
