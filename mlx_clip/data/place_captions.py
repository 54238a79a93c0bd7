"""The findspot caption experiment's captions: one template without the place, the same with the
place's name, and the same with its coordinates; checked so that the three runs train on the same
records (one split), and what the place costs in tokens.

Coordinates are digits: "37.9715, 23.7257" is 15 CLIP tokens where "Athens" is 1, out of a
77-token context, and nobody types them into a query. This module measures that on your records.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import InputError
from .captions import Template
from .records import MISSING, get_field

VARIANTS = ("no-place", "place-name", "coordinates")


@dataclass(frozen=True)
class PlaceTemplates:
    """The three caption templates of the experiment, by variant name."""

    no_place: str
    place_name: str
    coordinates: str

    def by_variant(self) -> dict[str, str]:
        return dict(zip(VARIANTS, (self.no_place, self.place_name, self.coordinates)))


def place_templates(caption: str, place_field: str, lat_field: str, lon_field: str, decimals: int = 4,
                    words: str = ", found at ") -> PlaceTemplates:
    """`caption` alone, + `words` + {place_field}, + `words` + {lat:.Nf}, {lon:.Nf} (4 decimals: ~11 m)."""
    if not 0 <= decimals <= 8:
        raise InputError(f"--decimals must be 0 to 8, not {decimals}")
    Template.parse(caption)  # a malformed template is one line here
    coordinates = f"{{{lat_field}:.{decimals}f}}, {{{lon_field}:.{decimals}f}}"
    return PlaceTemplates(caption, f"{caption}{words}{{{place_field}}}", f"{caption}{words}{coordinates}")


def check_place_records(records: Sequence[dict], templates: PlaceTemplates, fields: dict[str, str], source: str,
                        where: Callable[[int], str]) -> None:
    """Every record needs a caption without the place (else the no-place run drops it and the three
    runs split different records); each named field must be on some record. One line otherwise."""
    for flag, name in fields.items():
        if not any(get_field(r, name, MISSING) is not MISSING for r in records):
            raise InputError(f"{source}: {flag} {name!r}: no record has this field")
    base = Template.parse(templates.no_place)
    empty = [i for i, r in enumerate(records) if not base.render(r)]
    if empty:
        verb = "has" if len(empty) == 1 else "have"
        raise InputError(f"{where(empty[0])}: {len(empty):,} of {len(records):,} records {verb} no caption without "
                         f"the place ({templates.no_place!r}); the three runs must train on the same records: name "
                         "fields every record fills in --caption, or leave those records out")


@dataclass
class TokenCost:
    """Tokens per caption for each variant (with the start and end tokens), and the extra tokens
    the place name and the coordinates add to each record's caption."""

    tokens: dict[str, list[int]]
    context_length: int

    def added(self, variant: str) -> list[int]:
        return [b - a for a, b in zip(self.tokens[VARIANTS[0]], self.tokens[variant])]

    def cut(self, variant: str) -> int:
        return sum(n > self.context_length for n in self.tokens[variant])

    def lines(self) -> list[str]:
        out = []
        for variant in VARIANTS:
            counts = self.tokens[variant]
            line = (f"{variant:<12} median {statistics.median(counts):g} tokens, longest {max(counts)}; "
                    f"{self.cut(variant):,} of {len(counts):,} captions cut at {self.context_length}")
            if variant != VARIANTS[0]:
                extra = self.added(variant)
                line += f"; adds median {statistics.median(extra):g} tokens (most {max(extra)})"
            out.append(line)
        return out

    def as_dict(self) -> dict:
        return {"context_length": self.context_length, "captions": len(self.tokens[VARIANTS[0]]),
                **{v: {"median_tokens": statistics.median(self.tokens[v]), "longest": max(self.tokens[v]),
                       "cut": self.cut(v), **({"median_added": statistics.median(self.added(v)),
                                              "most_added": max(self.added(v))} if v != VARIANTS[0] else {})}
                   for v in VARIANTS}}


def token_cost(records: Sequence[dict], templates: PlaceTemplates, count_tokens: Callable[[list[str]], list[int]],
               context_length: int) -> TokenCost:
    """Each variant's caption of each record, counted by the model's own tokenizer."""
    tokens = {}
    for variant, text in templates.by_variant().items():
        template = Template.parse(text)
        tokens[variant] = count_tokens([template.render(r) for r in records])
    return TokenCost(tokens, context_length)
