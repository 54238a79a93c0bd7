"""What the search page's JSON API answers, apart from HTTP: parse a query, embed it with the
collection's own model, rank, and describe each record (score, title, link, fields).

Every error a request can cause is an InputError with one line; the server turns it into a 400.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..data.coordinates import Coordinates, checked_coordinates, detect_coordinate_fields, read_coordinates
from ..errors import InputError
from .record_link import check_link_template, record_link
from .collection_map import CollectionMap, collection_map, colouring
from .places import PLACE_KEYS, PlaceFilter, parse_place, place_mask, place_points
from .thumbnails import MAX_PIXELS, ThumbnailCache, open_bounded
from .vector_search import RESERVED_FIELDS, LoadedCollection

QUERY_KEYS = ("q", "k", "collection", "like") + PLACE_KEYS
"""Query parameters with a meaning of their own; any other is a field filter (FIELD=VALUE)."""
MAX_K = 200
MAX_QUERY_CHARS = 1000


@dataclass
class Query:
    collection: str | None
    k: int
    text: str | None
    like: str | None
    filters: dict[str, str]
    place: PlaceFilter | None = None


def parse_query(params: dict[str, list[str]]) -> Query:
    """From parse_qs output; a repeated or malformed parameter is one line."""
    for name, values in params.items():
        if len(values) != 1:
            raise InputError(f"parameter {name!r} is given {len(values)} times; give it once")
    value = {name: values[0] for name, values in params.items()}
    k_text = value.get("k", "12")
    if not k_text.isdigit() or not 1 <= int(k_text) <= MAX_K:
        raise InputError(f"k must be a whole number from 1 to {MAX_K}, not {k_text[:40]!r}")
    text = value.get("q", "").strip() or None
    if text and len(text) > MAX_QUERY_CHARS:
        raise InputError(f"q is {len(text)} characters; at most {MAX_QUERY_CHARS}")
    filters = {name: v for name, v in value.items() if name not in QUERY_KEYS and v != ""}
    return Query(value.get("collection") or None, int(k_text), text, value.get("like") or None, filters,
                 parse_place(value))


class SearchService:
    """The collections, the models that embed queries (loaded on first use, one per model), thumbnails."""

    def __init__(self, collections: list[LoadedCollection], link_template: str | None = None,
                 max_pixels: int = MAX_PIXELS, load_model=None, lat_field: str | None = None,
                 lon_field: str | None = None):
        if not collections:
            raise InputError("no collections to search")
        self.collections = {c.key: c for c in collections}
        self.coordinates = all_coordinates(collections, lat_field, lon_field)
        self.link_template = link_template
        if link_template:
            check_link_template(link_template)  # a malformed template is refused at start, not on the first result
        self.max_pixels = max_pixels
        self.thumbnails = ThumbnailCache()
        self.models: dict[str, Any] = {}
        self.maps: dict[str, CollectionMap] = {}
        self.lock = threading.Lock()  # one model call at a time
        self.map_lock = threading.Lock()  # one map computation at a time
        self.load_model = load_model

    # collections
    def collection(self, key: str | None) -> LoadedCollection:
        if key is None:
            return next(iter(self.collections.values()))
        if key not in self.collections:
            raise InputError(f"no collection {key[:80]!r} (collections: {', '.join(self.collections)})")
        return self.collections[key]

    def describe_collections(self) -> dict:
        return {"collections": [{"name": c.key, "records": len(c), "model": c.info.model_source,
                                 "family": c.info.family, "dimensions": c.info.dimensions,
                                 "label_field": c.info.label_field, "fields": c.fields,
                                 "index_file": c.index_path.name, "coordinates": self.describe_coordinates(c.key),
                                 "warning": c.blind_note}
                                for c in self.collections.values()]}

    def describe_coordinates(self, key: str) -> dict | None:
        found = self.coordinates[key]
        return None if found is None else {"lat_field": found.lat_field, "lon_field": found.lon_field,
                                           "with": found.count, "without": found.without, "line": found.line()}

    def coordinate_fields(self, key: str) -> set[str]:
        """Top-level fields holding coordinates: filtered by place and mapped, never offered as facets."""
        found = self.coordinates[key]
        return set() if found is None else {found.lat_field, found.lon_field}

    def facets(self, key: str | None) -> dict:
        found = self.collection(key)
        skip = self.coordinate_fields(found.key)
        return {"collection": found.key, "facets": {name: [{"value": v, "count": n} for v, n in counts]
                                                     for name, counts in found.facets().items() if name not in skip}}

    # queries
    def model_for(self, found: LoadedCollection):
        with self.lock:
            source = found.info.model_source
            if source not in self.models:
                if self.load_model is None:
                    from .. import load as load_model
                else:
                    load_model = self.load_model
                try:
                    self.models[source] = load_model(source)
                except (OSError, ValueError) as err:
                    message = str(err).splitlines()[0] if str(err) else type(err).__name__
                    raise InputError(f"collection {found.key!r}: its model {source} cannot be loaded ({message})") from None
            return self.models[source]

    def embed_text(self, found: LoadedCollection, text: str) -> np.ndarray:
        model = self.model_for(found)
        with self.lock:
            return model.embed_texts([text])[0]

    def embed_image(self, found: LoadedCollection, data: bytes) -> np.ndarray:
        image = open_bounded(data, "the uploaded image", self.max_pixels)
        model = self.model_for(found)
        with self.lock:
            return model.embed_images([image])[0]

    def search(self, query: Query, image: bytes | None = None) -> dict:
        found = self.collection(query.collection)
        if image is not None:
            vector, asked = self.embed_image(found, image), {"image": len(image)}
        elif query.like is not None:
            vector, asked = found.vector_of(query.like), {"like": query.like}
        elif query.text is not None:
            vector, asked = self.embed_text(found, query.text), {"q": query.text}
        else:
            raise InputError("give q=TEXT, like=RECORD_ID, or POST an image")
        also = (None if query.place is None else
                place_mask(self.coordinates[found.key], query.place, f"collection {found.key!r}"))
        hits, kept = found.search(vector, query.k, query.filters, also)
        out = {"collection": found.key, "query": dict(asked, k=query.k, filters=query.filters),
               "records": len(found), "matched": kept,
               "results": [self.describe(found, h.row, h.score) for h in hits]}
        if query.place is not None:
            out["query"]["place"] = query.place.describe()
            out["place"] = {"with_coordinates": self.coordinates[found.key].count, "passed": int(also.sum())}
        return out

    def describe(self, found: LoadedCollection, row: int, score: float | None = None) -> dict:
        record = found.records[row]
        url = record_link(self.link_template, record) if self.link_template else record.get("record_url")
        if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https")):
            url = None  # never a javascript: or file: link from a record
        out = {"record_id": found.ids[row], "title": found.title(row), "record_url": url,
               "fields": {k: v for k, v in record.items() if k not in RESERVED_FIELDS}}
        if score is not None:
            out["score"] = round(score, 5)
        return out

    def thumbnail(self, key: str | None, record_id: str | None) -> bytes:
        found = self.collection(key)
        if record_id is None or record_id not in found.row_of:
            raise LookupError(f"collection {found.key!r} has no record {str(record_id)[:80]!r}")
        image_path = found.records[found.row_of[record_id]].get("image_path")
        if not isinstance(image_path, str) or not image_path:
            raise LookupError(f"record {record_id!r} has no image_path")
        return self.thumbnails.get(image_path, f"record {record_id!r}")

    # the map
    def map(self, key: str | None, colour_field: str | None) -> dict:
        found = self.collection(key)
        colours = colouring(found, colour_field, self.coordinate_fields(found.key))
        with self.map_lock:  # minutes at 72,000 records on a small CPU: searches go on meanwhile
            if found.key not in self.maps:
                self.maps[found.key] = collection_map(found)
            made = self.maps[found.key]
        labels = colours.pop("labels")
        return {"collection": found.key, "method": made.method, "explained": made.explained, **colours,
                "points": np.round(made.coords, 4).tolist(), "ids": found.ids,
                "titles": [found.title(i) for i in range(len(found))],
                "worth_checking": [{"row": row, "label": labels[row], "neighbours_say": top}
                                   for row, top in made.worth_checking(labels)],
                "note": "A linear projection: it keeps distances honest but packs clusters closer than UMAP "
                        "or t-SNE would draw them"}

    def places(self, key: str | None, colour_field: str | None) -> dict:
        """The place map: records with coordinates by longitude and latitude, each with its link."""
        found = self.collection(key)
        coordinates = self.coordinates[found.key]
        if coordinates is None:
            raise InputError(f"collection {found.key!r} has no coordinates (start search.py with --lat-field "
                             "and --lon-field naming the fields that hold decimal degrees)")
        colours = colouring(found, colour_field, self.coordinate_fields(found.key))
        geometry = place_points(coordinates)
        rows = geometry.pop("rows")
        colours.pop("labels")
        colours["colour"] = [colours["colour"][r] for r in rows]
        colours["counts"] = [colours["colour"].count(slot) for slot in range(len(colours["values"]))]  # as plotted
        return {"collection": found.key, "records": len(found), **geometry, **colours,
                "ids": [found.ids[r] for r in rows], "titles": [found.title(r) for r in rows],
                "links": [self.describe(found, r)["record_url"] for r in rows]}


def all_coordinates(collections: list[LoadedCollection], lat_field: str | None,
                    lon_field: str | None) -> dict[str, Coordinates | None]:
    """Each collection's coordinates: from the named fields (checked; when no collection has valid
    ones the first collection's reason is the one line, so a typo stops the start), else from
    lat/lon-named fields found in its records, else None."""
    found: dict[str, Coordinates | None] = {}
    errors = []
    for collection in collections:
        if lat_field or lon_field:
            try:
                found[collection.key] = checked_coordinates(collection.records, lat_field, lon_field,
                                                            f"{collection.index_path.name}: collection {collection.key!r}")
            except InputError as err:
                errors.append(err)
                found[collection.key] = None
        else:
            detected = detect_coordinate_fields(collection.records)
            found[collection.key] = read_coordinates(collection.records, *detected) if detected else None
    if errors and len(errors) == len(collections):
        raise errors[0]
    return found
