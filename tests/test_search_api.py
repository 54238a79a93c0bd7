"""The search page's JSON API and server, on index files of real tiny-model embeddings of emoji."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import mlx_clip
from mlx_clip.errors import InputError
from mlx_clip.search import build_parser
from mlx_clip.use.search_api import SearchService
from mlx_clip.use.search_server import make_server
from mlx_clip.use.vector_search import read_collections
from search_fixtures import HOSTILE_TITLE, RunningServer, build_search_index

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def index_files(tmp_path_factory, tiny_hf, openai_vocab):
    return build_search_index(tmp_path_factory.mktemp("search_index"), tiny_hf, openai_vocab)


@pytest.fixture(scope="module")
def server(index_files):
    running = RunningServer(SearchService(read_collections([index_files["index"]])), max_upload_bytes=2_000_000)
    yield running
    running.stop()


def get(server, path):
    with urllib.request.urlopen(server.url + path, timeout=60) as response:
        return response.status, response.headers, response.read()


def get_json(server, path, data=None):
    request = urllib.request.Request(server.url + path, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_text_search_ranks_records_by_the_collections_own_model(server, index_files):
    status, answer = get_json(server, "/api/search?q=a+red+apple&k=5&collection=tuned")
    assert status == 200 and answer["collection"] == "tuned" and answer["records"] == 30
    scores = [r["score"] for r in answer["results"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    # the same ranking computed here from the tuned model and the stored vectors
    model = mlx_clip.load(index_files["models"]["tuned"])
    tuned = [c for c in read_collections([index_files["index"]]) if c.key == "tuned"][0]
    expected = np.argsort(-(tuned.matrix @ model.embed_texts(["a red apple"])[0]), kind="stable")[:5]
    assert [r["record_id"] for r in answer["results"]] == [tuned.ids[i] for i in expected]
    first = answer["results"][0]
    record = next(r for r in index_files["records"] if r["id"] == first["record_id"])
    assert first["fields"]["category"] == record["category"] and first["title"] == record["name"]
    assert first["record_url"] == f"https://example.org/emoji/{record['unicode']}"
    assert "image_path" not in first["fields"]  # the server's paths stay on the server


def test_filters_apply_before_ranking(server):
    _, unfiltered = get_json(server, "/api/search?q=an+animal&k=30&collection=base")
    _, filtered = get_json(server, "/api/search?q=an+animal&k=5&collection=base&category=Food+%26+Drink")
    assert filtered["matched"] == 9 and len(filtered["results"]) == 5
    assert all(r["fields"]["category"] == "Food & Drink" for r in filtered["results"])
    food_in_order = [r["record_id"] for r in unfiltered["results"] if r["fields"]["category"] == "Food & Drink"]
    assert [r["record_id"] for r in filtered["results"]] == food_in_order[:5]  # the best 5 of 9, not of the top 5
    _, facets = get_json(server, "/api/facets?collection=base")
    assert {"value": "Food & Drink", "count": 9} in facets["facets"]["category"]


def test_an_uploaded_image_finds_its_own_record_first(server, index_files):
    record = index_files["records"][7]
    data = Path(record["image_path"]).read_bytes()
    for collection in ("base", "tuned"):
        status, answer = get_json(server, f"/api/search?k=3&collection={collection}", data=data)
        assert status == 200
        assert answer["results"][0]["record_id"] == record["id"]
        assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_more_like_this_uses_each_collections_own_vector(server, index_files):
    rid = index_files["records"][12]["id"]
    answers = {c: get_json(server, f"/api/search?k=4&collection={c}&like={rid}", data=b"")[1] for c in ("base", "tuned")}
    collections = {c.key: c for c in read_collections([index_files["index"]])}
    for name, answer in answers.items():
        found = collections[name]
        expected = np.argsort(-(found.matrix @ found.vector_of(rid)), kind="stable")[:4]
        assert [r["record_id"] for r in answer["results"]] == [found.ids[i] for i in expected]
        assert answer["results"][0]["record_id"] == rid
    # side by side: one query, two collections, two different rankings from two models
    assert [r["record_id"] for r in answers["base"]["results"]] != [r["record_id"] for r in answers["tuned"]["results"]] \
        or [r["score"] for r in answers["base"]["results"]] != [r["score"] for r in answers["tuned"]["results"]]
    _, listed = get_json(server, "/api/collections")
    assert [c["name"] for c in listed["collections"]] == ["base", "tuned"]
    assert all("warning" in c for c in listed["collections"])  # the blind-model line, or null


def test_a_model_that_tells_no_image_apart_is_said_on_the_page_and_a_real_spread_is_not():
    """The page's column says when a collection's images nearly all score alike (a collapsed or
    untrained model: its rankings say little); spread vectors, and a few true copies, say nothing."""
    from mlx_clip.use import neighbours
    from mlx_clip.use.store import CollectionInfo
    from mlx_clip.use.vector_search import LoadedCollection

    rng = np.random.default_rng(0)

    def collection(matrix):
        matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)
        ids = [f"r{i}" for i in range(len(matrix))]
        info = CollectionInfo("c", "mlx-clip/c", "m", "clip", matrix.shape[1])
        return LoadedCollection("c", Path("x.db"), 1, info, ids, matrix, [{} for _ in ids])

    spread = rng.normal(size=(300, 32))
    spread[1] = spread[0]  # one true copy: a sliver of the pairs
    assert collection(spread).blind_note is None
    collapsed = collection(np.ones((300, 32)) + 0.01 * rng.normal(size=(300, 32)))
    assert collapsed.blind_note.startswith("this model hardly tells these images apart: 100% of the pairs of its "
                                           "300 images score 0.95 or more (cosine)")
    assert not neighbours.hardly_tells_apart(10, 10, 5)  # 5 images, all copies: too few to call the model blind
    big = collection(np.ones((2500, 8)))
    assert "2,000 of its 2,500 images (a seeded sample)" in big.blind_note


def test_two_files_with_one_collection_name_both_open(index_files):
    found = read_collections([index_files["index"], index_files["other"]])
    assert [c.key for c in found] == ["base", "tuned", "base (other.db)"]
    assert len(found[2]) == 10


@pytest.mark.parametrize("path", ["/api/search?q=x&k=0", "/api/search?q=x&k=abc", "/api/search?q=x&k=1&k=2",
                                  "/api/search?k=3", "/api/search?q=x&collection=nope", "/api/search?q=x&nofield=1",
                                  "/api/search?like=no-such-record", "/api/map?field=nofield",
                                  "/api/search?q=" + "x" * 1200])
def test_a_malformed_query_is_a_400_with_one_line(server, path):
    status, answer = get_json(server, path)
    assert status == 400
    assert set(answer) == {"error"} and "\n" not in answer["error"] and answer["error"]


def test_uploads_are_bounded(server):
    status, answer = get_json(server, "/api/search?k=3", data=b"\0" * 2_000_001)
    assert status == 413 and "at most 2,000,000" in answer["error"]
    status, answer = get_json(server, "/api/search?k=3", data=b"not an image at all")
    assert status == 400 and "unreadable image" in answer["error"]
    bomb = _png_header(9000, 9000)  # under Pillow's own refusal, over ours
    status, answer = get_json(server, "/api/search?k=3", data=bomb)
    assert status == 400 and "9,000 x 9,000 pixels is over the pixel budget of 50 megapixels" in answer["error"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a huge size (its pixels are never read)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def test_only_the_collections_images_are_served(server, index_files):
    rid = index_files["records"][0]["id"]
    status, headers, body = get(server, f"/thumb?collection=base&id={rid}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    for path in ["/thumb?collection=base&id=../../../../etc/passwd", "/thumb?collection=base&id=/etc/passwd",
                 "/thumb?collection=base&id=" + index_files["records"][0]["image_path"],
                 "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/../../etc/passwd",
                 "/static/search.py", "/static/" + str(ROOT / "search.py")]:
        connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=30)
        connection.request("GET", path)  # sent as written: urllib would normalise the dots away
        response = connection.getresponse()
        body = response.read()
        assert response.status == 404, path
        assert b"root:" not in body and b"import" not in body


def test_the_page_carries_no_record_text_and_forbids_inline_script(server):
    status, headers, body = get(server, "/")
    assert status == 200 and b"<script src=\"/static/search.js\"" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]  # an injected <script> could not run
    _, _, script = get(server, "/static/search.js")
    assert b"innerHTML" not in script and b"insertAdjacentHTML" not in script and b"document.write" not in script
    status, answer = get_json(server, "/api/search?q=smile&k=30&collection=base")
    hostile = [r for r in answer["results"] if r["title"] == HOSTILE_TITLE]
    assert hostile and hostile[0]["fields"]["subcategory"] == "<b>bold</b>"  # JSON carries it as text


def test_a_port_in_use_is_one_line_and_port_zero_picks_a_free_one(index_files):
    service = SearchService(read_collections([index_files["other"]]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"port {port} on 127.0.0.1 is in use"):
            make_server(service, "127.0.0.1", port)
        result = subprocess.run([sys.executable, str(ROOT / "search.py"), str(index_files["other"]), "--port", str(port)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: port {port} on 127.0.0.1 is in use")
    assert build_parser().parse_args(["finds.db"]).host == "127.0.0.1"  # this computer only, unless --host
    server = make_server(service, "127.0.0.1", 0)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.server_address[1] > 0
    finally:
        server.server_close()


def test_bad_index_files_are_one_line(tmp_path, index_files):
    (tmp_path / "x.db").write_bytes(b"not sqlite" * 100)
    for args in ([str(tmp_path / "x.db")], [str(tmp_path / "missing.db")],
                 [str(index_files["index"]), "--link-template", "https://x/{unicode"]):
        result = subprocess.run([sys.executable, str(ROOT / "search.py"), *args, "--port", "0"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), args


def test_a_nested_catalogues_fields_are_dotted_paths_for_filters_map_and_curator(tmp_path, tiny_hf):
    """A museum's JSON nests its fields (object.type, findspot.name): index.py took --label-field
    object.type, then the curator and the map refused it ("has no field") and the page offered no
    filter on either. Fields are the dotted paths every flag uses, a null parent is not one."""
    from mlx_clip.use.collection_map import labels_of
    from mlx_clip.use.curate import label_field_of
    from search_fixtures import emoji_records, write_collection

    records = [{"id": r["id"], "name": r["name"], "image_path": r["image_path"],
                "object": {"type": r["category"], "sub": r["subcategory"]},
                "findspot": {"name": "Knossos" if i % 3 else "Troy"} if i % 5 else None}
               for i, r in enumerate(emoji_records(20))]
    write_collection(tmp_path / "nested.db", "nested", tiny_hf, records, label_field="object.type")
    found = read_collections([tmp_path / "nested.db"])[0]
    assert {"object.type", "object.sub", "findspot.name"} <= set(found.fields)
    assert "object" not in found.fields and "findspot" not in found.fields
    assert label_field_of(found, None) == "object.type"
    assert labels_of(found, "object.type") == [r["object"]["type"] for r in records]
    facets = found.facets()
    assert dict(facets["findspot.name"]) == {"Knossos": sum(1 for i in range(20) if i % 5 and i % 3),
                                             "Troy": sum(1 for i in range(20) if i % 5 and not i % 3)}
    service = SearchService([found])
    running = RunningServer(service)
    try:
        status, result = get_json(running, "/api/search?q=a+face&k=20&findspot.name=Troy")
    finally:
        running.stop()
    assert status == 200
    assert {r["fields"]["findspot"]["name"] for r in result["results"]} == {"Troy"}
    assert result["matched"] == dict(facets["findspot.name"])["Troy"]
