"""The curator's files from an index: duplicates.csv, suggestions.csv and suspects.csv, made to be
opened in a spreadsheet (UTF-8 with a byte-order mark so Excel reads accents; a value that would
start a formula is prefixed with an apostrophe).

- duplicates: pairs at or above a similarity threshold, most similar first (blocked products,
  neighbours.similar_pairs); `same_file` says when both records name files with one SHA-256.
- suggestions: records whose label field is empty get the 3 labels the catalogue does use whose
  prompt is nearest their image, with the cosine. The prompt is --label-prompt when given, else
  the one the collection's model was fine-tuned and scored with (its card or run records it:
  outputs/label_prompt.py), else "a photo of {label}" (`curate_label_prompt`).
- suspects: labelled records whose 10 nearest images mostly carry one other label (k-nearest-
  neighbour disagreement: the same rule as the map's "label worth checking"), with the zero-shot
  margin (own label's prompt score minus the best other label's) beside it as a second opinion.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..settings import DEFAULT_LABEL_PROMPT
from ..errors import InputError
from ..io import atomic_file
from ..outputs.label_prompt import recorded_label_prompt
from ..train.evaluate import class_embeddings
from .collection_map import WORTH_CHECKING, collection_map, labels_of
from .neighbours import blocks, hardly_tells_apart, label_disagreement, similar_pairs
from .vector_search import LoadedCollection

SUGGESTIONS = 3


@dataclass
class CurateConfig:
    threshold: float = 0.95
    max_pairs: int = 100_000
    label_field: str | None = None
    label_prompt: str | list[str] | None = None  # None: the model's own (curate_label_prompt)


def curate_label_prompt(model_source: str, given: str | list[str] | None) -> tuple[str | list[str], str]:
    """The prompt(s) the label suggestions use and, in words, why: the given one wins; a model that
    records the prompt it was fine-tuned with gets that one; any other gets the default."""
    if given:
        return given, "given by --label-prompt"
    recorded = recorded_label_prompt(model_source)
    if recorded is not None:
        return recorded[0], f"the prompt the model was fine-tuned with, from {recorded[1]}"
    return DEFAULT_LABEL_PROMPT, "the default: the model records no label prompt of its own"


def shown_prompt(prompt: str | list[str]) -> str:
    return prompt if isinstance(prompt, str) else " | ".join(prompt)


def spreadsheet_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (=, +, @, or - not before a number) is quoted."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] in "=+@\t\r" or (value[0] == "-" and not re.fullmatch(r"-\d+(\.\d+)?", value)):
        return "'" + value
    return value


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    count = 0
    with atomic_file(path, "w") as handle:
        handle.write("\ufeff")
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([spreadsheet_cell(v) for v in row])
            count += 1
    return count


def label_field_of(found: LoadedCollection, given: str | None) -> str | None:
    field = given or found.info.label_field
    if field is not None and field not in found.fields:
        raise InputError(f"{found.index_path}: collection {found.key!r} has no field {field!r} "
                         f"(fields: {', '.join(found.fields) or 'none'})")
    return field


def duplicates(found: LoadedCollection, config: CurateConfig, log=print) -> list[list[Any]]:
    """duplicates.csv's rows; says so when --max-pairs cut them (how many pairs passed the threshold)."""
    rows = []
    pairs, passing = similar_pairs(found.matrix, config.threshold, config.max_pairs)
    records, total = len(found.ids), len(found.ids) * (len(found.ids) - 1) // 2
    if hardly_tells_apart(passing, total, records):
        log(f"warning: {found.key}: {passing:,} of its {total:,} pairs ({passing / total:.0%}) are at or above "
            f"similarity {config.threshold:g}: the model hardly tells these images apart, so duplicates.csv and "
            "suspects.csv (both read its similarities) say little (an untrained or collapsed model? index with "
            "another model, or raise --threshold)")
    if passing > len(pairs):
        log(f"{found.key}: {passing:,} pairs at or above similarity {config.threshold:g}; duplicates.csv keeps "
            f"the {len(pairs):,} most similar (raise --threshold, or --max-pairs for more)")
    for score, i, j in pairs:
        sha_i, sha_j = found.records[i].get("sha256"), found.records[j].get("sha256")
        same = "yes" if sha_i and sha_i == sha_j else ""
        rows.append([f"{score:.4f}", found.ids[i], found.title(i), found.ids[j], found.title(j), same])
    return rows


def class_vectors(model, classes: list[str], prompt: str) -> np.ndarray:
    vectors = class_embeddings(model, classes, prompt)
    if not np.all(np.isfinite(vectors)):
        raise InputError("the model's text embeddings of the label prompts are not finite")
    return vectors


def suggestions(found: LoadedCollection, labels: list[str | None], classes: list[str],
                class_vecs: np.ndarray) -> list[list[Any]]:
    rows = []
    unlabelled = np.array([i for i, label in enumerate(labels) if not label], dtype=np.int64)
    for start, stop in blocks(len(unlabelled)):
        part = unlabelled[start:stop]
        scores = found.matrix[part] @ class_vecs.T
        best = np.argsort(-scores, axis=1, kind="stable")[:, :SUGGESTIONS]
        for row, order, line in zip(part.tolist(), best, scores):
            cells = [found.ids[row], found.title(row)]
            for j in order.tolist():
                cells += [classes[j], f"{line[j]:.4f}"]
            rows.append(cells)
    return rows


def suspects(found: LoadedCollection, labels: list[str | None], classes: list[str],
             class_vecs: np.ndarray | None) -> list[list[Any]]:
    neighbours = collection_map(found).neighbours
    position = {c: j for j, c in enumerate(classes)}
    found_rows = []
    for row, (share, top) in enumerate(label_disagreement(neighbours, labels)):
        own = labels[row]
        if top is None or top == own or share > WORTH_CHECKING:
            continue
        margin = ""
        if class_vecs is not None and len(classes) > 1:
            scores = class_vecs @ found.matrix[row]
            others = np.delete(scores, position[own])
            margin = float(scores[position[own]] - others.max())
        found_rows.append((share, margin if margin != "" else 0.0, row, top, margin))
    found_rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [[found.ids[row], found.title(row), labels[row], top, f"{share:.2f}",
             f"{margin:.4f}" if margin != "" else ""] for share, _, row, top, margin in found_rows]


def curate(found: LoadedCollection, out: Path, config: CurateConfig, model=None, log=print) -> dict[str, int]:
    """Write the three files into `out`; `model` (the collection's own) embeds the label prompts."""
    field = label_field_of(found, config.label_field)
    out.mkdir(parents=True, exist_ok=True)
    written = {"duplicates.csv": write_csv(out / "duplicates.csv", ["similarity", "record_id_a", "title_a",
                                                                    "record_id_b", "title_b", "same_file"],
                                           duplicates(found, config, log))}
    if field is None:
        log(f"{found.key}: no label field (pass --label-field): suggestions.csv and suspects.csv skipped")
        return written
    labels = labels_of(found, field)
    classes = sorted({label for label in labels if label})
    class_vecs = None
    if model is not None and classes:
        prompt, why = curate_label_prompt(found.info.model_source, config.label_prompt)
        log(f"{found.key}: labels scored with the prompt {shown_prompt(prompt)!r} ({why})")
        class_vecs = class_vectors(model, classes, prompt)
    if class_vecs is not None:
        header = ["record_id", "title"] + [f"{kind}_{n}" for n in range(1, SUGGESTIONS + 1) for kind in ("label", "score")]
        written["suggestions.csv"] = write_csv(out / "suggestions.csv", header,
                                               suggestions(found, labels, classes, class_vecs))
    written["suspects.csv"] = write_csv(out / "suspects.csv", ["record_id", "title", "label", "neighbours_say",
                                                               "share_of_neighbours_agreeing", "zero_shot_margin"],
                                        suspects(found, labels, classes, class_vecs))
    return written
