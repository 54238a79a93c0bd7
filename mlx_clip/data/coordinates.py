"""A record's findspot as decimal coordinates: read (with the dotted-field reader of records.py),
checked, counted, and measured (great-circle km).

A value counts as a coordinate when it is a number or a numeric string ("37.9715", as a CSV holds
it), finite, with latitude in -90..90 and longitude in -180..180. Anything else (missing, empty,
"unknown", 412.0) leaves the record without coordinates: it is never on the place map and never
passes a place filter, and the counts say why.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError
from .records import MISSING, get_field

EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG), as the haversine formula takes it
LAT_NAMES = ("lat", "latitude", "findspot_lat", "decimal_latitude", "decimallatitude", "y_coord")
LON_NAMES = ("lon", "lng", "long", "longitude", "findspot_lon", "findspot_lng", "decimal_longitude",
             "decimallongitude", "x_coord")
"""Field names (last part of a dotted path, any case) tried when no --lat-field/--lon-field is given."""
WHY = ("missing", "not a number", "out of range")


def number(value: Any) -> float | None:
    """A finite float from a number or a numeric string; None otherwise (booleans are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().replace("\u2212", "-"))
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def coordinate_of(record: Any, lat_field: str, lon_field: str) -> tuple[float, float] | str:
    """(lat, lon), or why not: "missing", "not a number" or "out of range"."""
    raw = [get_field(record, f, MISSING) for f in (lat_field, lon_field)]
    if any(v is MISSING or v is None or v == "" for v in raw):
        return "missing"
    lat, lon = (number(v) for v in raw)
    if lat is None or lon is None:
        return "not a number"
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return "out of range"
    return lat, lon


@dataclass
class Coordinates:
    """Each record's (lat, lon) in degrees, NaN where it has none, and how many lack them and why."""

    lat_field: str
    lon_field: str
    lat: np.ndarray  # (N,) float64
    lon: np.ndarray
    without: dict[str, int]  # why -> count, for records without valid coordinates

    @property
    def valid(self) -> np.ndarray:
        return ~np.isnan(self.lat)

    @property
    def count(self) -> int:
        return int(self.valid.sum())

    def line(self) -> str:
        """ "27 of 30 records have coordinates (lat, lon); 3 do not (2 missing, 1 out of range)", or
        "... 3 do not (all missing)" when one reason holds for all of them."""
        total = len(self.lat)
        line = f"{self.count:,} of {total:,} records have coordinates ({self.lat_field}, {self.lon_field})"
        if self.count == total:
            return line
        reasons = [(w, n) for w in WHY if (n := self.without.get(w, 0))]
        why = f"all {reasons[0][0]}" if len(reasons) == 1 else ", ".join(f"{n:,} {w}" for w, n in reasons)
        return f"{line}; {total - self.count:,} do not ({why})"


def read_coordinates(records: Sequence[Any], lat_field: str, lon_field: str) -> Coordinates:
    lat = np.full(len(records), np.nan)
    lon = np.full(len(records), np.nan)
    without: Counter[str] = Counter()
    for row, record in enumerate(records):
        found = coordinate_of(record, lat_field, lon_field)
        if isinstance(found, str):
            without[found] += 1
        else:
            lat[row], lon[row] = found
    return Coordinates(lat_field, lon_field, lat, lon, dict(without))


def checked_coordinates(records: Sequence[Any], lat_field: str | None, lon_field: str | None,
                        where: str) -> Coordinates:
    """read_coordinates for the fields a user named; a field no record has, or one field without
    the other, is one line naming `where` (the file or collection)."""
    if bool(lat_field) != bool(lon_field):
        raise InputError("give both --lat-field and --lon-field (e.g. --lat-field lat --lon-field lon)")
    for flag, name in (("--lat-field", lat_field), ("--lon-field", lon_field)):
        if not any(get_field(r, name, MISSING) is not MISSING for r in records):
            raise InputError(f"{where}: {flag} {name!r}: no record has this field")
    found = read_coordinates(records, lat_field, lon_field)
    if found.count == 0:
        raise InputError(f"{where}: no record has valid coordinates in {lat_field!r}, {lon_field!r} "
                         f"(latitude -90..90, longitude -180..180; {', '.join(f'{n} {w}' for w, n in found.without.items())})")
    return found


def field_paths(record: Any, prefix: str = "", depth: int = 3) -> Iterable[str]:
    """Dotted paths of the scalar fields of a record (nested objects to `depth` levels)."""
    if not isinstance(record, dict) or depth == 0:
        return
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from field_paths(value, path + ".", depth - 1)
        else:
            yield path


def detect_coordinate_fields(records: Sequence[Any], look_at: int = 500) -> tuple[str, str] | None:
    """(lat_field, lon_field) when a pair of lat/lon-named fields with one parent holds valid
    coordinates on at least one of the first `look_at` records; else None."""
    head = list(records[:look_at])
    paths = list(dict.fromkeys(p for r in head for p in field_paths(r)))
    lats = [p for p in paths if p.rsplit(".", 1)[-1].lower() in LAT_NAMES]
    lons = [p for p in paths if p.rsplit(".", 1)[-1].lower() in LON_NAMES]
    for lat in lats:
        for lon in lons:
            if lat.rpartition(".")[0] == lon.rpartition(".")[0] and read_coordinates(head, lat, lon).count:
                return lat, lon
    return None


def haversine_km(lat: np.ndarray, lon: np.ndarray, centre_lat: float, centre_lon: float) -> np.ndarray:
    """Great-circle distance in km from (centre_lat, centre_lon) to each point (NaN stays NaN)."""
    phi, centre_phi = np.radians(lat), math.radians(centre_lat)
    half_dphi = (phi - centre_phi) / 2
    half_dlambda = np.radians(lon - centre_lon) / 2
    a = np.sin(half_dphi) ** 2 + np.cos(phi) * math.cos(centre_phi) * np.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
