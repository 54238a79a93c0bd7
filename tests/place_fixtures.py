"""Emoji records given findspots for the place filter and the place map: three sites (real
coordinates of Athens, Corinth and Knossos, a few hundred metres of scatter) and records whose
coordinates are missing, not numbers or out of range."""

from __future__ import annotations

from pathlib import Path

from search_fixtures import emoji_records, write_collection

SITES = {"Athens": (37.9715, 23.7257), "Corinth": (37.9061, 22.8781), "Knossos": (35.2980, 25.1632)}
BAD = {25: None, 26: ("unknown", "23.7"), 27: (412.0, 23.7), 28: ("", "")}
"""Records without valid coordinates: 25 has no findspot at all; 26 not a number; 27 out of range; 28 empty."""


def site_of(row: int) -> str:
    return "Athens" if row < 10 else "Corinth" if row < 20 else "Knossos"


def place_records(count: int = 30) -> list[dict]:
    """`count` emoji records with a `site` name and a nested `findspot` {lat, lon}; row 29's as strings."""
    records = []
    for row, record in enumerate(emoji_records(count)):
        site = site_of(row)
        lat, lon = SITES[site]
        jitter = (row % 10 - 4.5) * 0.002  # about 200 m a step: no two finds at one point
        record = dict(record, site=site, findspot={"lat": round(lat + jitter, 5), "lon": round(lon - jitter, 5)})
        if row in BAD:
            if BAD[row] is None:
                del record["findspot"]
            else:
                record["findspot"] = {"lat": BAD[row][0], "lon": BAD[row][1]}
        if row == 29:
            record["findspot"] = {"lat": "35.2990", "lon": "25.1640"}  # as a CSV column holds them
        records.append(record)
    return records


def build_place_index(folder: Path, model: Path) -> dict:
    """finds.db: collection `finds` (nested findspot.lat/lon) and `flat` (top-level lat/lon, found
    without flags) over the same 30 records."""
    records = place_records()
    template = "https://example.org/finds/{id}"
    write_collection(folder / "finds.db", "finds", model, records, label_field="category", link_template=template)
    flat = []  # top-level lat/lon; the placed finds at their site's point (shared values, as many catalogues hold)
    for row, record in enumerate(records):
        spot = record.get("findspot")
        if spot is not None and row not in BAD:
            spot = dict(zip(("lat", "lon"), SITES[record["site"]]))
        flat.append(dict({k: v for k, v in record.items() if k != "findspot"}, **(spot or {})))
    write_collection(folder / "flat.db", "flat", model, flat, label_field="category")
    return {"finds": folder / "finds.db", "flat": folder / "flat.db", "records": records}
