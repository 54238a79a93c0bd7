"""The search page's findspots in a real headless Chromium: the place filter's inputs, the map by
findspot (drawn offline), a find's popup linking its record, and a click on the map setting the
place filter; no console errors."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from browser import CANVAS_INK_JS, drive_page, find_chromium
from mlx_clip.use.search_api import SearchService
from mlx_clip.use.vector_search import read_collections
from place_fixtures import build_place_index, site_of
from search_fixtures import RunningServer

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="needs chromium")

CARDS = "Array.from(document.querySelectorAll('.column .card')).map(a => a.dataset.recordId)"
VALID = [row for row in range(30) if row not in (25, 26, 27, 28)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_hf):
    built = build_place_index(tmp_path_factory.mktemp("place_page"), tiny_hf)
    running = RunningServer(SearchService(read_collections([built["finds"]]), lat_field="findspot.lat",
                                          lon_field="findspot.lon"))
    running.records = built["records"]
    yield running
    running.stop()


def click_at(lat: float, lon: float) -> str:
    """JS: a click on the canvas where (lat, lon) is drawn."""
    return ("(() => { const c = document.getElementById('map-canvas'), m = state.map; "
            f"const [x, y] = Places.project([{lon}, {lat}], Places.frame(m.extent, c)); "
            "const b = c.getBoundingClientRect(); c.dispatchEvent(new MouseEvent('click', {bubbles: true, "
            "clientX: b.left + x * b.width / c.width, clientY: b.top + y * b.height / c.height})); return true; })()")


def test_the_place_filter_and_the_findspot_map(server, tmp_path):
    ids = [r["id"] for r in server.records]
    first = server.records[0]

    async def script(page):
        seen = {}
        await page.wait_for("document.body.dataset.ready === 'yes'")
        seen["note"] = await page.evaluate("!document.getElementById('place-box').hidden && "
                                           "document.getElementById('place-note').textContent")
        await page.evaluate("document.getElementById('k').value = '48'; document.getElementById('q').value = 'a face'; "
                            "document.getElementById('search-form').requestSubmit(); true")
        await page.wait_for(f"{CARDS}.length === 30")
        # the inputs: within 5 km of Athens
        await page.evaluate("document.getElementById('near').value = '37.9715, 23.7257'; "
                            "document.getElementById('km').value = '5'; document.getElementById('place-apply').click(); true")
        seen["athens"] = await page.wait_for(f"{CARDS}.length === 10 && {CARDS}")
        await page.screenshot(tmp_path / "place-filter.png")
        # the map by findspot
        await page.evaluate("document.getElementById('tab-map').click(); const s = document.getElementById('map-mode'); "
                            "s.value = 'places'; s.dispatchEvent(new Event('change')); true")
        seen["method"] = await page.wait_for("(t => t.includes('Findspots') && t)(document.getElementById('map-method').textContent)")
        await page.evaluate("const f = document.getElementById('map-field'); f.value = 'site'; f.dispatchEvent(new Event('change')); true")
        seen["legend"] = await page.wait_for("state.map.field === 'site' && Array.from(document.querySelectorAll('#map-legend li'))"
                                             ".map(li => li.textContent)")
        seen["plotted"] = await page.evaluate("state.map.ids")
        # a find's popup links its record
        await page.evaluate(click_at(first["findspot"]["lat"], first["findspot"]["lon"]))
        seen["popup"] = await page.wait_for("(p => !p.hidden && p.querySelector('a') && [p.querySelector('a').href, "
                                            "p.querySelector('a').textContent])(document.getElementById('map-popup'))")
        await page.screenshot(tmp_path / "place-map-popup.png")
        # a click beside Knossos (about 19 km west, no find there) sets the place filter: within 25 km
        await page.evaluate("document.getElementById('km').value = '25'; true")
        await page.evaluate(click_at(35.30, 24.95))
        seen["near"] = await page.wait_for("state.place && state.place.km === 25 && document.getElementById('near').value")
        seen["knossos"] = await page.wait_for(f"{CARDS}.length === 6 && {CARDS}")
        seen["inked"] = await page.evaluate(CANVAS_INK_JS)
        await page.screenshot(tmp_path / "place-map.png")
        seen["errors"] = page.errors()
        return seen

    seen = drive_page(server.url + "/", script, timeout=120)
    assert seen["errors"] == []
    assert seen["note"].startswith("26 of 30 records have coordinates (findspot.lat, findspot.lon); the 4 without them never pass a place filter")
    assert sorted(seen["athens"]) == sorted(ids[:10])
    assert "26 of 30 records have coordinates" in seen["method"] and "equirectangular" in seen["method"]
    assert seen["legend"][:3] == ["Athens (10)", "Corinth (10)", "Knossos (6)"]
    assert seen["plotted"] == [ids[row] for row in VALID]  # the unplaced four are not on the map
    # the find clicked (Athens' finds lie 200 m apart: a pixel at this scale), linked to its own record
    link, title = seen["popup"]
    assert link in {f"https://example.org/finds/{i}" for i in ids[:10]}
    assert title == next(r["name"] for r in server.records if link.endswith("/" + r["id"]))
    lat, lon = (float(v) for v in seen["near"].split(","))
    assert lat == pytest.approx(35.30, abs=0.01) and lon == pytest.approx(24.95, abs=0.01)
    assert sorted(seen["knossos"]) == sorted(ids[row] for row in VALID if site_of(row) == "Knossos")
    assert seen["inked"] > 2000  # graticule, points, circle
    shots = os.environ.get("SEARCH_SCREENSHOTS")
    if shots:  # to look at them: SEARCH_SCREENSHOTS=/some/folder pytest tests/test_place_page.py
        for name in ("place-filter.png", "place-map-popup.png", "place-map.png"):
            shutil.copyfile(tmp_path / name, os.path.join(shots, name))
    json.dumps(seen)  # plain data only
