"""What fine-tuning forgets: the fine-tuned model against its base model on material that ships
with the package and that a collection's own run never trains on, the bundled emoji set
(mlx_clip/demo/emoji: Noto images, their names and categories).

Two general skills are scored on an evenly spaced subset (300 of 1,906 emoji by default):
image -> its name among all the subset's names (recall@1, i2t_R@1) and the image's category among
the emoji categories by a prompt (zero-shot accuracy). "Kept" is fine-tuned / base in percent; the
change carries the same paired bootstrap interval as every other change (mlx_clip.train.scores).
The base model's per-item results are cached per base model (runs/.cache/), so a second run from
the same base scores only the fine-tuned model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from ..io import write_json
from .bootstrap import words_for
from .evaluate import EvalSet, ZeroShot, evaluate
from .metric_names import ZERO_SHOT, ci_key, recall_key
from . import scores

EMOJI_FOLDER = Path(__file__).resolve().parents[1] / "demo" / "emoji"
NAME_CAPTION = "an emoji of {name}"
CATEGORY_PROMPT = "an emoji from the category {label}"
DEFAULT_SIZE = 300
CACHE_VERSION = 1
MEASURES = {recall_key("i2t", 1): "image → its name, recall@1", ZERO_SHOT: "image → its category, zero-shot accuracy"}


@dataclass
class RetentionSet:
    """The emoji subset: image paths, name captions, categories and names (to spot a run trained on it)."""

    ids: list[str]
    eval_set: EvalSet
    names: list[str]


def retention_set(size: int = DEFAULT_SIZE, folder: Path = EMOJI_FOLDER) -> RetentionSet:
    """`size` emoji evenly spaced through the id-sorted records (every category represented)."""
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    records.sort(key=lambda r: str(r["id"]))
    picks = sorted(set(np.linspace(0, len(records) - 1, min(size, len(records))).round().astype(int).tolist()))
    chosen = [records[i] for i in picks]
    eval_set = EvalSet([str(folder / r["image_path"]) for r in chosen],
                       [NAME_CAPTION.format(name=r["name"]) for r in chosen], [r["category"] for r in chosen])
    return RetentionSet([str(r["id"]) for r in chosen], eval_set, [str(r["name"]).lower() for r in chosen])


def _base_key(base_model: str, size: int) -> str:
    """Cache key: the base model as named, its config.json's time when it is a folder, the subset."""
    config = Path(base_model).expanduser() / "config.json"
    stamp = config.stat().st_mtime_ns if config.is_file() else 0
    text = json.dumps([CACHE_VERSION, str(base_model), stamp, size, NAME_CAPTION, CATEGORY_PROMPT])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _to_json(details) -> dict:
    zs = details.zero_shot
    return {"i2t": details.ranks["i2t"].tolist(), "t2i": details.ranks["t2i"].tolist(), "captions": details.captions,
            "zero_shot": None if zs is None else {"classes": zs.classes, "index": zs.index.tolist(),
                                                  "truth": zs.truth.tolist(), "predicted": zs.predicted.tolist()}}


def _from_json(data: dict, n: int):
    """The cached base results as a details object for mlx_clip.train.scores; None when it does not fit."""
    try:
        ranks = {k: np.asarray(data[k], dtype=np.int64) for k in ("i2t", "t2i")}
        zs = data.get("zero_shot")
        zero_shot = None if zs is None else ZeroShot(
            [str(c) for c in zs["classes"]], *(np.asarray(zs[k], dtype=np.int64) for k in ("index", "truth", "predicted")))
        captions = [str(c) for c in data["captions"]]
        if ranks["i2t"].size != n or ranks["t2i"].size != len(captions):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return SimpleNamespace(ranks=ranks, captions=captions, caption_of_image=None, zero_shot=zero_shot)


def base_details(load_base, base_model: str, chosen: RetentionSet, cache_dir: Path | None, threads: int = 4):
    """The base model's per-item results on the subset: from the cache, else measured (and cached)."""
    cache = cache_dir / f"retention-{_base_key(base_model, len(chosen.ids))}.json" if cache_dir else None
    if cache is not None and cache.is_file() and cache.stat().st_size < 5_000_000:
        try:
            found = _from_json(json.loads(cache.read_text(encoding="utf-8")), len(chosen.ids))
        except (OSError, ValueError):
            found = None
        if found is not None:
            return found
    _, details = evaluate(load_base(), chosen.eval_set, CATEGORY_PROMPT, details=True, threads=threads)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, {"base_model": str(base_model), **_to_json(details)})
    return details


def chance_level(details, key: str) -> float:
    """What guessing scores: one over the candidates (the distinct names an image's name is ranked
    among; the categories for zero-shot)."""
    if key == ZERO_SHOT:
        return 1 / len(details.zero_shot.classes)
    return 1 / len(set(details.captions))


def retention(model, load_base, base_model: str, size: int = DEFAULT_SIZE, cache_dir: Path | None = None,
              trained_records: Sequence[dict] = (), threads: int = 4) -> dict:
    """metrics.json's "retention": per skill the base and fine-tuned scores with intervals, the
    percentage kept and the paired change; `trained_records` (their `name` fields, as the emoji
    records have) tell whether the emoji set was trained on, when "kept" measures no forgetting of anything general."""
    chosen = retention_set(size)
    base = base_details(load_base, base_model, chosen, cache_dir, threads)
    _, after = evaluate(model, chosen.eval_set, CATEGORY_PROMPT, details=True, threads=threads)
    out: dict = {"set": f"bundled emoji ({len(chosen.ids)} images: names and categories)", "size": len(chosen.ids),
                 "scores": {}}
    for key, measure in MEASURES.items():
        b, a = scores.score_and_interval(base, key), scores.score_and_interval(after, key)
        change = scores.change(base, after, key)
        if b is None or a is None or change is None:
            continue
        chance = chance_level(base, key)
        out["scores"][key] = {"measure": measure, "base": b[0], ci_key("base"): b[1], "after": a[0],
                              ci_key("after"): a[1], "kept_percent": 100 * a[0] / b[0] if b[0] > 0 else None,
                              "chance": chance, "at_chance": b[1][0] <= chance,  # its interval reaches chance
                              "change": change[0], ci_key("change"): change[1], "words": words_for(change[1], change[2])}
    kept = [s["kept_percent"] for s in out["scores"].values() if s["kept_percent"] is not None]
    out["kept_percent"] = float(np.mean(kept)) if kept else None
    at_chance = [s["measure"] for s in out["scores"].values() if s["at_chance"]]
    out["at_chance"] = bool(out["scores"]) and len(at_chance) == len(out["scores"])
    if at_chance:  # a share of a chance-level score says nothing of what was kept
        out["chance_note"] = ("the base model scores at chance on " + " and ".join(at_chance) + " (its interval "
                              "reaches the chance level), so the share kept there measures nothing")
    trained_names = {str(r['name']).lower() for r in trained_records if isinstance(r, dict) and r.get('name')}
    seen = len(set(chosen.names) & trained_names)
    out["out_of_domain"] = seen < max(1, len(chosen.names) // 20)
    if not out["out_of_domain"]:
        out["note"] = (f"this run trained on the emoji set ({seen} of the {len(chosen.ids)} retention emoji are in its "
                       "records), so retention here is not out-of-domain: it measures the training data, not "
                       "what the model forgot")
    return out
