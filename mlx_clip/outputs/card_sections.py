"""The body of a model card: its sections (metrics before/after, data, config, usage, limits),
each a list of Markdown lines built from a `CardInfo` (model_card.py assembles and writes them)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

from ..models.family import Family
from .card_info import CardInfo
from .card_metrics import Value, first_value, split_metrics
from .shown_text import md_cell, md_code, public_value
from .card_judging import judging_lines
from ..train.bootstrap import MIN_ITEMS, TOO_FEW, shown_interval
from ..train.metric_names import I2I_QUERIES

SECRET_KEY = re.compile(r"(^|[_.-])(token|secret|password|passwd|api_?key|auth|credentials?)($|[_.-])",
                         re.IGNORECASE)


def _fmt(x: float | None, rank: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.1f}" if rank or abs(x) > 1 else f"{x:.3f}"  # shares to 3 places, ranks to 1


def _is_rank(name: str) -> bool:
    return "rank" in name


def _fmt_value(v: Value | None, name: str = "", items: int | None = None) -> str:
    """A value with its interval; none on fewer than MIN_ITEMS items (bootstrap.shown_interval)."""
    if v is None:
        return "–"
    text = _fmt(v.value, _is_rank(name))
    interval = shown_interval(v.interval, items)
    if interval:
        text += f" [{_fmt(interval[0], _is_rank(name))}, {_fmt(interval[1], _is_rank(name))}]"
    return text


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _val_size(info: CardInfo) -> Any:
    return (first_value(info.metrics, "val_size", "n_val", "validation_size", "n")
            or first_value(info.data, "val", "val_size", "validation"))


def metrics_section(info: CardInfo) -> list[str]:
    before, after, rows = split_metrics(info.metrics)
    if not before and not after:
        return []
    counts = [side.pop(I2I_QUERIES, None) for side in (after, before)]  # a count, not a score
    queries = next((count for count in counts if count is not None), None)
    names = list(dict.fromkeys([*before, *after]))
    n_val = _count(_val_size(info))

    def items(name: str) -> int | None:
        """What a score rests on: image-to-image recall its query images, the rest the set's images."""
        return _count(queries.value) if name.startswith("i2i_") and queries is not None else n_val

    lines = ["## Evaluation: before and after fine-tuning", ""]
    kind = info.metrics.get("set", "validation") if isinstance(info.metrics, Mapping) else "validation"
    warnings = info.metrics.get("warnings") if isinstance(info.metrics, Mapping) else None
    lines += judging_lines(info.metrics)
    for warning in warnings if isinstance(warnings, list) else []:
        lines += [f"> **{str(warning).replace(chr(10), ' ')}**", ""]
    where = f"the held-out {kind} set ({n_val} images)" if n_val else f"the held-out {kind} set"
    if kind == "test":
        where += ", which was neither trained on nor used to pick the best epoch"
    elif info.metrics.get("picked_epoch"):  # a run without a test set: its validation chose the epoch
        where += ", which picked the best epoch, so these figures flatter the model"
    lines.append(f"Measured on {where}; \"before\" is the base model, \"after\" the fine-tuned one.")
    with_interval = [name for name in names
                     if any(v is not None and v.interval for v in (before.get(name), after.get(name)))]
    few = [name for name in with_interval if (items(name) or MIN_ITEMS) < MIN_ITEMS]
    if len(few) < len(with_interval):
        lines.append("Brackets give the 95% interval reported with each value.")
    if few:
        lines.append(f"No interval on {', '.join(md_cell(name) for name in few)}: {TOO_FEW} on "
                     + ", ".join(dict.fromkeys(f"{items(name)} items" for name in few)) + f" (fewer than {MIN_ITEMS}).")
    if not with_interval:
        size = f" ({n_val} images)" if n_val else ""
        lines.append(f"No confidence interval was computed: read the values with the validation-set size{size} in mind.")
    lines += ["", "| metric | before | after | change |", "|---|---|---|---|"]
    for name in names:
        b, a = before.get(name), after.get(name)
        change = "–"
        if b is not None and a is not None and b.value is not None and a.value is not None:
            small = abs(a.value) <= 1 and abs(b.value) <= 1 and not _is_rank(name)
            change = f"{a.value - b.value:+.3f}" if small else f"{a.value - b.value:+.1f}"
        lines.append(f"| {md_cell(name)} | {_fmt_value(b, name, items(name))} | {_fmt_value(a, name, items(name))} "
                     f"| {change} |")
    lines.append("")
    lines.append("Recall@k: share of queries whose match ranks in the top k; mean rank: lower is better.")
    if len(rows) > 1:
        columns = list(dict.fromkeys(k for r in rows for k in r if k not in ("epoch", I2I_QUERIES)))
        lines += ["", "Per epoch:", "", "| epoch | " + " | ".join(md_cell(c) for c in columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for r in rows:
            lines.append(f"| {md_cell(r['epoch'])} | "
                         + " | ".join(_fmt_value(r.get(c), c, items(c)) for c in columns) + " |")
    return lines + [""]


def data_section(info: CardInfo) -> list[str]:
    data = info.data if isinstance(info.data, Mapping) else {}
    if not data and not info.caption_templates and not info.datasets:
        return []
    lines = ["## Training data", ""]
    source = first_value(data, "source", "name", "metadata", "path")
    if source:
        lines.append(f"- Source: {md_code(public_value(source))}")
    if info.datasets:
        lines.append("- Hub datasets: " + ", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in info.datasets))
    records = first_value(data, "records", "n_records", "population")
    if records is not None:
        lines.append(f"- Records in the metadata: {records}")
    sample = data.get("sample") if isinstance(data.get("sample"), Mapping) else {}
    method = first_value(sample, "method") or first_value(data, "sample_method")
    size = first_value(sample, "size", "n") or first_value(data, "sample_size")
    if method or size:
        extra = [f"{k} {sample[k]}" for k in ("by", "seed", "margin") if sample.get(k) not in (None, "")]
        text = f"- Sample: {size if size is not None else '?'} records, {method or 'method not recorded'}"
        lines.append(text + (f" ({', '.join(extra)})" if extra else ""))
    images = first_value(data, "images", "downloaded", "n_images")
    if images is not None:
        lines.append(f"- Images used: {images}")
    train, val = first_value(data, "train", "n_train"), first_value(data, "val", "n_val", "validation")
    if train is not None or val is not None:
        test = first_value(data, "test", "n_test")  # held out: the before/after figures (0 or absent: none)
        lines.append(f"- Split: {train if train is not None else '?'} train / {val if val is not None else '?'} validation"
                     + (f" / {test} test (held out, never trained on)" if test else ""))
    labels = data.get("labels") if isinstance(data.get("labels"), Mapping) else {}
    label_field = first_value(labels, "field") or first_value(data, "label_field")
    counts = first_value(labels, "counts", "distribution") or first_value(data, "label_counts", "label_distribution")
    if isinstance(counts, Mapping) and counts:
        total = sum(v for v in counts.values() if isinstance(v, (int, float))) or 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1] if isinstance(kv[1], (int, float)) else 0)
        shown = ranked[:15]
        lines += ["", f"Label distribution{f' ({md_code(label_field)})' if label_field else ''}:", "",
                  "| label | records | share |", "|---|---|---|"]
        for label, count in shown:
            share = f"{100 * count / total:.1f}%" if isinstance(count, (int, float)) else "–"
            lines.append(f"| {md_cell(label)} | {md_cell(count)} | {share} |")
        if len(ranked) > len(shown):
            rest = sum(v for _, v in ranked[len(shown):] if isinstance(v, (int, float)))
            lines.append(f"| ({len(ranked) - len(shown)} more labels) | {rest} | {100 * rest / total:.1f}% |")
    if info.caption_templates:
        lines += ["", "Caption templates (record fields in braces; one drawn at random per image and epoch):", ""]
        lines += [f"- {md_code(t)}" for t in info.caption_templates]
    return lines + [""]


def _flatten(config: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if SECRET_KEY.search(str(key)):
            continue
        if isinstance(value, Mapping):
            out += _flatten(value, f"{name}.")
        elif key in ("caption_templates", "captions", "templates"):
            continue  # shown with the data
        else:
            out.append((name, value))
    return out


def config_section(info: CardInfo) -> list[str]:
    if not isinstance(info.config, Mapping) or not info.config:
        return []
    lines = ["## Training configuration", "", "| setting | value |", "|---|---|"]
    for name, value in _flatten(info.config):
        value = public_value(value)  # a published card names no local folder
        text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        lines.append(f"| {md_cell(name)} | {md_cell(text, 120)} |")
    return lines + [""]


def transformers_snippet(repo: str, family: Family) -> list[str]:
    """Zero-shot classification with transformers: CLIP's softmax over labels; SigLIP's texts padded
    to max_length as it was trained, and an independent sigmoid per label."""
    if family.model_type == "siglip":
        return [
            "import torch",
            "from PIL import Image",
            "from transformers import AutoModel, AutoProcessor",
            "",
            f'model = AutoModel.from_pretrained("{repo}")  # a SiglipModel',
            f'processor = AutoProcessor.from_pretrained("{repo}")',
            'labels = ["a bronze coin", "a red-figure amphora", "a flint arrowhead"]',
            'inputs = processor(text=labels, images=Image.open("photo.jpg"), return_tensors="pt", padding="max_length")',
            "probs = torch.sigmoid(model(**inputs).logits_per_image)  # each label on its own",
        ]
    return [
        "from PIL import Image",
        "from transformers import CLIPModel, CLIPProcessor",
        "",
        f'model = CLIPModel.from_pretrained("{repo}")',
        f'processor = CLIPProcessor.from_pretrained("{repo}")',
        'labels = ["a bronze coin", "a red-figure amphora", "a flint arrowhead"]',
        'inputs = processor(text=labels, images=Image.open("photo.jpg"), return_tensors="pt", padding=True)',
        "probs = model(**inputs).logits_per_image.softmax(dim=1)",
    ]


def usage_section(repo: str, family: Family) -> list[str]:
    return [
        "## How to use", "",
        "With transformers (zero-shot classification of an image against your own labels):", "",
        "```python",
        *transformers_snippet(repo, family),
        "```", "",
        "With sentence-transformers (image and text embeddings in one space, for search):", "",
        "```python",
        "from PIL import Image",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{repo}")',
        'image_vectors = model.encode([Image.open("photo.jpg")])',
        'text_vectors = model.encode(["a bronze coin from the Roman period"])',
        "print(model.similarity(image_vectors, text_vectors))",
        "```", "",
        "With mlx-clip-finetune's `mlx_clip` on a Mac (MLX; downloaded once, then used from the cache):", "",
        "```python",
        "import mlx_clip",
        "",
        f'model = mlx_clip.load("{repo}")',
        'image_vectors = model.embed_images(["photo.jpg"])   # (N, D) unit vectors',
        'text_vectors = model.embed_texts(["a bronze coin"])',
        "scores = image_vectors @ text_vectors.T",
        "```", "",
        "With [llm](https://llm.datasette.io/) and this project's plugin:", "",
        "```bash",
        f"llm mlx-clip register my-clip {repo}",
        "llm embed-multi photos -m mlx-clip/my-clip --files photos/ '*.jpg' --binary",
        "llm similar photos -c 'a bronze coin'",
        "```", "",
    ]


def limits_section(info: CardInfo, family: Family) -> list[str]:
    base = f" {md_code(public_value(info.base_model))}" if info.base_model else ""
    return [
        "## Intended use and limits", "",
        "Intended for image-text retrieval and zero-shot classification of images like those it was "
        "fine-tuned on: searching a collection by description, suggesting labels for cataloguing, "
        "finding similar images.", "",
        f"- It inherits the biases and failure modes of the base model{base} (trained on web image-text "
        "pairs) and adds those of the fine-tuning data: labels rare in the training sample are "
        "recognised less reliably, and captions built from catalogue metadata carry that catalogue's "
        "vocabulary and gaps.",
        "- The metrics above come from one validation split of the same collection; expect lower "
        "scores on images from other sources.",
        "- Not for identifying people, for surveillance, or for decisions about people.",
        "- Text longer than 77 tokens is truncated." if family.model_type == "clip" else
        "- Text longer than the text model's positions (64 tokens in Google's SigLIP checkpoints) is truncated.", "",
    ]
