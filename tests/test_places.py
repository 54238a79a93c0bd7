"""Findspots as fields: coordinates read from dotted fields and checked, a place filter (km from a
point, a box) applied before ranking, the place map's data, and one-line errors; on index files of
real tiny-model embeddings of emoji given the coordinates of three Greek sites (tests/place_fixtures.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mlx_clip.data.coordinates import detect_coordinate_fields, haversine_km, read_coordinates
from mlx_clip.errors import InputError
from mlx_clip.use.search_api import SearchService
from mlx_clip.use.vector_search import read_collections
from place_fixtures import SITES, build_place_index, place_records, site_of
from search_fixtures import RunningServer, write_collection

ROOT = Path(__file__).resolve().parents[1]
VALID = [row for row in range(30) if row not in (25, 26, 27, 28)]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_hf):
    folder = tmp_path_factory.mktemp("places")
    found = build_place_index(folder, tiny_hf)
    plain = [{k: v for k, v in r.items() if k != "findspot"} for r in found["records"][:10]]
    write_collection(folder / "plain.db", "plain", tiny_hf, plain)
    found["plain"] = folder / "plain.db"
    return found


@pytest.fixture(scope="module")
def server(built):
    collections = read_collections([built["finds"], built["plain"]])
    running = RunningServer(SearchService(collections, lat_field="findspot.lat", lon_field="findspot.lon"))
    yield running
    running.stop()


def get_json(server, path):
    try:
        with urllib.request.urlopen(server.url + path, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_coordinates_come_from_dotted_fields_and_bad_ones_are_counted_by_why():
    found = read_coordinates(place_records(), "findspot.lat", "findspot.lon")
    assert np.flatnonzero(found.valid).tolist() == VALID  # row 29's numeric strings count, as a CSV's would
    assert found.without == {"missing": 2, "not a number": 1, "out of range": 1}
    assert found.line() == ("26 of 30 records have coordinates (findspot.lat, findspot.lon); 4 do not "
                            "(2 missing, 1 not a number, 1 out of range)")
    assert detect_coordinate_fields(place_records()) == ("findspot.lat", "findspot.lon")
    assert detect_coordinate_fields([{"latitude": "n/a", "longitude": 3}]) is None
    some = read_coordinates([{"lat": 40.75, "lon": 14.48}, {"lat": "", "lon": ""}, {}], "lat", "lon")
    assert some.line() == "1 of 3 records have coordinates (lat, lon); 2 do not (all missing)"  # not "(2 missing)"


def test_haversine_km_matches_the_spheres_arcs():
    lat, lon = np.array([0.0, 90.0, 0.0, np.nan]), np.array([1.0, 0.0, 180.0, 0.0])
    km = haversine_km(lat, lon, 0.0, 0.0)
    arc = 6371.0088 * np.pi / 180  # one degree of a great circle
    assert km[:3] == pytest.approx([arc, 90 * arc, 180 * arc], rel=1e-9) and np.isnan(km[3])
    # off the equator: one degree of longitude at 60°N, by the spherical law of cosines
    phi = np.radians(60)
    expected = 6371.0088 * np.arccos(np.sin(phi) ** 2 + np.cos(phi) ** 2 * np.cos(np.radians(1)))
    assert haversine_km(np.array([60.0]), np.array([1.0]), 60.0, 0.0)[0] == pytest.approx(expected, rel=1e-6)


def test_a_place_filter_applies_before_ranking(server):
    _, everything = get_json(server, "/api/search?q=a+face&k=30&collection=finds")
    _, athens = get_json(server, "/api/search?q=a+face&k=4&collection=finds&near=37.9715,23.7257&km=5")
    assert athens["matched"] == 10 and athens["place"] == {"with_coordinates": 26, "passed": 10}
    assert athens["query"]["place"] == {"near": [37.9715, 23.7257], "km": 5.0}
    in_order = [r["record_id"] for r in everything["results"] if r["fields"]["site"] == "Athens"]
    assert [r["record_id"] for r in athens["results"]] == in_order[:4]  # the best 4 of Athens, not of the top 4
    # with a field filter too: both apply
    _, both = get_json(server, "/api/search?q=a+face&k=30&collection=finds&near=37.9715,23.7257&km=100"
                               "&category=Smileys+%26+Emotion")
    expected = {r["record_id"] for r in everything["results"]
                if r["fields"]["site"] in ("Athens", "Corinth") and r["fields"]["category"] == "Smileys & Emotion"}
    assert {r["record_id"] for r in both["results"]} == expected and both["matched"] == len(expected) > 0


def test_a_box_filter_and_records_without_coordinates_never_match(server, built):
    ids = [r["id"] for r in built["records"]]

    def matched(place):
        _, answer = get_json(server, f"/api/search?q=a+face&k=30&collection=finds&{place}")
        return sorted(r["record_id"] for r in answer["results"])

    crete = sorted(ids[row] for row in VALID if site_of(row) == "Knossos")
    assert matched("bbox=34.8,23.4,35.7,26.4") == crete and len(crete) == 6  # 25-28 are on Crete but unplaced
    # a box across the antimeridian (west > east): longitudes >= 24 or <= 23, i.e. Knossos and Corinth
    assert matched("bbox=30,24,40,23") == sorted(ids[row] for row in VALID if site_of(row) != "Athens")
    assert matched("near=0,0&km=20016") == sorted(ids[row] for row in VALID)  # the whole earth: 26, never 30
    assert matched("near=37.9715,23.7257&km=100&bbox=37.5,23.3,38.3,24.2") == sorted(ids[:10])  # both must pass


def test_the_place_map_holds_every_placed_record_with_its_link(server, built):
    status, answer = get_json(server, "/api/places?collection=finds&field=site")
    assert status == 200 and answer["with_coordinates"] == 26 and answer["records"] == 30
    assert answer["without"] == {"missing": 2, "not a number": 1, "out of range": 1}
    assert answer["ids"] == [built["records"][row]["id"] for row in VALID]
    lon, lat = answer["points"][0]
    assert (lat, lon) == pytest.approx(SITES["Athens"], abs=0.01)  # [lon, lat]: x then y
    assert answer["links"][0] == f"https://example.org/finds/{built['records'][0]['id']}"
    assert answer["values"] == ["Athens", "Corinth", "Knossos"] and answer["counts"] == [10, 10, 6]  # as plotted
    assert answer["colour"].count(2) == 6  # Knossos: 6 of its 10 placed
    extent = answer["extent"]
    assert extent["south"] < 35.29 < 37.98 < extent["north"] and extent["west"] < 22.87 < 25.17 < extent["east"]
    _, listed = get_json(server, "/api/collections")
    assert listed["collections"][0]["coordinates"]["with"] == 26 and listed["collections"][1]["coordinates"] is None


@pytest.mark.parametrize("query", ["near=37.9,23.7", "km=5", "near=37.9&km=5", "near=100,0&km=5", "near=37,23&km=0",
                                   "near=37,23&km=x", "bbox=1,2,3", "bbox=40,0,30,10", "near=37,23&km=5&collection=plain"])
def test_a_bad_place_filter_is_a_400_with_one_line(server, query):
    status, answer = get_json(server, f"/api/search?q=x&{query}")
    assert status == 400 and set(answer) == {"error"} and "\n" not in answer["error"], answer


def test_lat_lon_fields_are_found_without_flags_and_kept_out_of_facets(built):
    service = SearchService(read_collections([built["flat"], built["plain"]]))
    flat = service.coordinates["flat"]
    assert (flat.lat_field, flat.lon_field, flat.count) == ("lat", "lon", 26)
    assert service.coordinates["plain"] is None
    assert "site" in service.facets("flat")["facets"] and "lat" not in service.facets("flat")["facets"]
    assert service.places("flat", None)["with_coordinates"] == 26
    with pytest.raises(InputError, match="has no coordinates"):
        service.places("plain", None)


def test_a_bad_lat_field_is_one_line_before_the_server_starts(built):
    cases = [(["--lat-field", "findspot.latt", "--lon-field", "findspot.lon"],
              "error: finds.db: collection 'finds': --lat-field 'findspot.latt': no record has this field"),
             (["--lat-field", "findspot.lat"], "error: give both --lat-field and --lon-field"),
             (["--lat-field", "site", "--lon-field", "findspot.lon"],
              "error: finds.db: collection 'finds': no record has valid coordinates in 'site', 'findspot.lon'")]
    for flags, line in cases:
        result = subprocess.run([sys.executable, str(ROOT / "search.py"), str(built["finds"]), "--port", "0", *flags],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith(line), result.stderr
        assert "search page" not in result.stdout


def test_the_console_says_how_many_records_have_coordinates(built):
    process = subprocess.Popen([sys.executable, str(ROOT / "search.py"), str(built["flat"]), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
    finally:
        process.terminate()
        process.wait(30)
    assert lines[0].startswith("flat: 30 records from ") and "; 26 of 30 records have coordinates (lat, lon); " \
        "4 do not (2 missing, 1 not a number, 1 out of range): records without them are not on the place map " \
        "and pass no place filter" in lines[0]
    assert lines[1].startswith("search page: http://127.0.0.1:")
