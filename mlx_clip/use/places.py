"""Findspots on the search page: a place filter (within R km of a point, and/or inside a box)
applied before ranking like the field filters, and the "places" map (records by longitude and
latitude, equirectangular, drawn by the page itself: no tiles, no network).

Coordinates are fields people filter and look at on a map, not words they type: a query never
holds "37.9715, 23.7257". Records without valid coordinates (data/coordinates.py) never pass a
place filter and are not on the place map; the API says how many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.coordinates import Coordinates, haversine_km, number
from ..errors import InputError

PLACE_KEYS = ("near", "km", "bbox")
UNPLACED = "records without them are not on the place map and pass no place filter"
"""Query parameters of the place filter: near=LAT,LON&km=R and/or bbox=SOUTH,WEST,NORTH,EAST."""
MAX_KM = 20_016.0  # half the earth's circumference: every point is nearer than this


@dataclass(frozen=True)
class PlaceFilter:
    near: tuple[float, float] | None = None
    km: float | None = None
    bbox: tuple[float, float, float, float] | None = None  # south, west, north, east; west > east crosses 180°

    def describe(self) -> dict:
        out: dict = {}
        if self.near is not None:
            out.update(near=list(self.near), km=self.km)
        if self.bbox is not None:
            out["bbox"] = list(self.bbox)
        return out


def _numbers(name: str, text: str, count: int, example: str) -> list[float]:
    parts = [number(p) for p in text.split(",")]
    if len(parts) != count or any(p is None for p in parts):
        raise InputError(f"{name} must be {count} numbers separated by commas, e.g. {name}={example}; not {text[:60]!r}")
    return parts  # type: ignore[return-value]


def parse_place(values: dict[str, str]) -> PlaceFilter | None:
    """The place filter from query parameters (None: no place filter); a bad one is one line."""
    near_text, km_text, bbox_text = (values.get(k, "").strip() for k in PLACE_KEYS)
    if not (near_text or km_text or bbox_text):
        return None
    near = km = bbox = None
    if near_text or km_text:
        if not (near_text and km_text):
            raise InputError("near=LAT,LON and km=R go together, e.g. near=37.9715,23.7257&km=25")
        lat, lon = _numbers("near", near_text, 2, "37.9715,23.7257")
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise InputError(f"near={near_text[:60]}: latitude must be in -90..90 and longitude in -180..180")
        (km,) = _numbers("km", km_text, 1, "25")
        if not 0 < km <= MAX_KM:
            raise InputError(f"km must be above 0 and at most {MAX_KM:,.0f}, not {km_text[:40]}")
        near = (lat, lon)
    if bbox_text:
        south, west, north, east = _numbers("bbox", bbox_text, 4, "36.5,22.0,38.5,24.5")
        if not (-90 <= south <= north <= 90 and -180 <= west <= 180 and -180 <= east <= 180):
            raise InputError(f"bbox={bbox_text[:60]}: give SOUTH,WEST,NORTH,EAST with south <= north, latitudes "
                             "in -90..90, longitudes in -180..180")
        bbox = (south, west, north, east)
    return PlaceFilter(near, km, bbox)


def place_mask(coordinates: Coordinates | None, place: PlaceFilter, where: str) -> np.ndarray:
    """The rows whose coordinates pass the filter; a collection without coordinates is one line."""
    if coordinates is None:
        raise InputError(f"{where} has no coordinates to filter by place (start search.py with "
                         "--lat-field and --lon-field)")
    keep = coordinates.valid.copy()
    lat, lon = coordinates.lat, coordinates.lon
    with np.errstate(invalid="ignore"):  # NaN rows compare False: no coordinates, no match
        if place.near is not None:
            keep &= haversine_km(lat, lon, *place.near) <= place.km
        if place.bbox is not None:
            south, west, north, east = place.bbox
            keep &= (lat >= south) & (lat <= north)
            keep &= ((lon >= west) & (lon <= east)) if west <= east else ((lon >= west) | (lon <= east))
    return keep


def extent(coordinates: Coordinates) -> dict[str, float]:
    """The box the place map shows: every record with coordinates, with a margin (at least ~1 km)."""
    valid = coordinates.valid
    lat, lon = coordinates.lat[valid], coordinates.lon[valid]
    south, north, west, east = float(lat.min()), float(lat.max()), float(lon.min()), float(lon.max())
    pad_lat = max((north - south) * 0.06, 0.01)
    pad_lon = max((east - west) * 0.06, 0.01 / max(math.cos(math.radians((north + south) / 2)), 0.05))
    return {"south": max(south - pad_lat, -90.0), "north": min(north + pad_lat, 90.0),
            "west": max(west - pad_lon, -180.0), "east": min(east + pad_lon, 180.0)}


def place_points(coordinates: Coordinates) -> dict:
    """The place map's geometry: each plotted row, its [lon, lat], the extent, and the counts."""
    rows = np.flatnonzero(coordinates.valid)
    return {"rows": rows.tolist(),
            "points": np.round(np.stack([coordinates.lon[rows], coordinates.lat[rows]], axis=1), 6).tolist(),
            "extent": extent(coordinates) if len(rows) else None,
            "lat_field": coordinates.lat_field, "lon_field": coordinates.lon_field,
            "with_coordinates": len(rows), "without": coordinates.without,
            "line": coordinates.line() + ("" if len(rows) == len(coordinates.lat) else f": {UNPLACED}"),
            "projection": "equirectangular (longitude and latitude as x and y, x scaled by the cosine of the "
                          "middle latitude); no tiles: the page draws it offline"}
