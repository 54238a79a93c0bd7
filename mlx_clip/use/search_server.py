"""The search page's HTTP server: the standard library's ThreadingHTTPServer on 127.0.0.1.

Routes: `/` (the page), `/static/NAME` (its script and style, from a fixed list), `/api/...` (JSON,
search_api.SearchService) and `/thumb?collection=NAME&id=RECORD_ID`. No part of a request path
ever reaches the disk: static files come from a fixed table, images by record id.
"""

from __future__ import annotations

import errno
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ..errors import InputError
from .search_api import SearchService, parse_query

STATIC = {"/": ("search.html", "text/html; charset=utf-8"),
          "/static/search.js": ("search.js", "text/javascript; charset=utf-8"),
          "/static/places.js": ("places.js", "text/javascript; charset=utf-8"),
          "/static/map.js": ("map.js", "text/javascript; charset=utf-8"),
          "/static/search.css": ("search.css", "text/css; charset=utf-8")}
MAX_UPLOAD_BYTES = 20 * 2**20
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_file(name: str) -> bytes:
    return resources.files("mlx_clip.use").joinpath("static", name).read_bytes()


class SearchHandler(BaseHTTPRequestHandler):
    service: SearchService
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    server_version = "mlx-clip-search"
    quiet = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if not self.quiet:
            super().log_message(format, *args)

    def send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, data, status: int = 200) -> None:
        self.send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def send_error_line(self, status: int, message: str) -> None:
        self.send_json({"error": " ".join(str(message).split())[:500]}, status)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.answer(None)

    def do_POST(self) -> None:  # noqa: N802
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            return self.send_error_line(HTTPStatus.LENGTH_REQUIRED, "POST an image with a Content-Length")
        length = int(length_text)
        if length > self.max_upload_bytes:
            self.close_connection = True
            if length <= 16 * self.max_upload_bytes:  # read and dropped in small pieces, so the client hears why
                for start in range(0, length, 2**16):
                    self.rfile.read(min(2**16, length - start))
            return self.send_error_line(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                        f"the upload is {length:,} bytes; at most {self.max_upload_bytes:,}")
        self.answer(self.rfile.read(length))

    def answer(self, body: bytes | None) -> None:
        url = urlsplit(self.path)
        try:
            params = parse_qs(url.query, keep_blank_values=True, max_num_fields=100, strict_parsing=False)
        except ValueError as err:
            return self.send_error_line(400, f"malformed query string ({err})")
        try:
            if body is not None:
                if url.path != "/api/search":
                    return self.send_error_line(404, f"no POST route {url.path[:80]}")
                query = parse_query(params)
                return self.send_json(self.service.search(query, image=body or None) if body
                                      else self.service.search(query))
            if url.path in STATIC:
                name, content_type = STATIC[url.path]
                return self.send(200, static_file(name), content_type)
            one = {k: v[0] for k, v in params.items() if len(v) == 1}
            if url.path == "/api/search":
                return self.send_json(self.service.search(parse_query(params)))
            if url.path == "/api/collections":
                return self.send_json(self.service.describe_collections())
            if url.path == "/api/facets":
                return self.send_json(self.service.facets(one.get("collection")))
            if url.path == "/api/map":
                return self.send_json(self.service.map(one.get("collection"), one.get("field") or None))
            if url.path == "/api/places":
                return self.send_json(self.service.places(one.get("collection"), one.get("field") or None))
            if url.path == "/thumb":
                try:
                    data = self.service.thumbnail(one.get("collection"), one.get("id"))
                except LookupError as err:
                    return self.send_error_line(404, str(err.args[0]))
                return self.send(200, data, "image/jpeg", cache=True)
            if url.path == "/favicon.ico":
                return self.send(204, b"", "image/x-icon", cache=True)
            self.send_error_line(404, f"no such page {url.path[:80]}")
        except InputError as err:
            self.send_error_line(400, str(err))
        except (BrokenPipeError, ConnectionResetError):
            pass


def make_server(service: SearchService, host: str = "127.0.0.1", port: int = 8000,
                max_upload_bytes: int = MAX_UPLOAD_BYTES) -> ThreadingHTTPServer:
    """The server, bound; a port in use is one line (InputError)."""
    handler = type("BoundSearchHandler", (SearchHandler,), {"service": service, "max_upload_bytes": max_upload_bytes})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is in use: pass another --port, or --port 0 for a free one") from None
        raise InputError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    server.daemon_threads = True
    return server


def serve(server: ThreadingHTTPServer, out=sys.stdout) -> None:
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    print(f"search page: http://{shown}:{port}/  (Ctrl-C to stop)", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=out)
    finally:
        server.server_close()
