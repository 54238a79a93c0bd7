"""A local aiohttp image server on 127.0.0.1 for the fetch tests, with routes that fail.

The server runs in a background thread with its own event loop, so both in-process calls and
``fetch.py`` subprocesses can use it. It counts requests per path (``server.hits``).

Routes (``{name}`` is a key of ``server.images``):

- ``/img/{name}``           the image; waits ``server.delay`` seconds first
- ``/flaky/{name}``         500 on the first request, then the image
- ``/ratelimited/{name}``   429 with ``Retry-After: server.retry_after`` first, then the image
- ``/missing/{name}``       404
- ``/error500/{name}``      500, every time
- ``/slow/{name}``          waits ``server.slow_seconds`` before answering
- ``/truncated/{name}``     the first half of the image's bytes
- ``/html/{name}``          an HTML error page with status 200
- ``/redirect/{name}``      302 to ``/img/{name}``
- ``/redirect-loop``        302 to itself
- ``/big``                  ``server.big_size`` bytes with a Content-Length
- ``/big-chunked``          as many bytes, chunked, no Content-Length
- ``/reset/{name}``         starts the body, then drops the connection, every time
- ``/reset-once/{name}``    drops the connection the first time, then the image
- ``/iiif/{name}/full/675,/0/default.jpg``   the image (many URLs end in ``default.jpg``)
- ``/trickle/{name}``       the image one byte every ``server.trickle_interval`` seconds, for
                            at most ``server.trickle_bytes`` bytes, then the connection drops
- ``/bad-retry-after/{name}``  429 with ``Retry-After: ²`` first, then the image
- ``/redirect-private/{name}``  302 to ``/img/{name}`` on ``PRIVATE_HOST`` (127.0.0.2)
- ``/redirect-host/{host}/{name}``  302 to ``/img/{name}`` on host name ``{host}``, this port

The same routes are served on ``PRIVATE_HOST`` too (``server.private_url(path)``), when the
system lets a socket bind it (Linux does for all of 127.0.0.0/8); ``server.has_private``
says whether it could; ``server.private_hits`` counts the requests that came in on it.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
from collections import Counter, defaultdict

from aiohttp import web
from PIL import Image

HOST = "127.0.0.1"
PRIVATE_HOST = "127.0.0.2"  # the tests treat HOST as a public catalogue host, this as private


def make_dds_unimplemented() -> bytes:
    """A DDS file with an unknown FourCC: Pillow raises NotImplementedError when opening it."""
    header = struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<2I", 32, 4) + b"XYZW" + b"\0" * 20
    return b"DDS " + header + pixel_format + struct.pack("<5I", 0x1000, 0, 0, 0, 0) + b"\0" * 64


def make_image(color: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (16, 12)) -> bytes:
    """A small solid-colour image encoded as ``fmt``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def make_noise_png(size: int = 96, seed: int = 0) -> bytes:
    """A PNG of random pixels (incompressible, so cutting it really truncates pixel data)."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class FetchServer:
    """An aiohttp server on 127.0.0.1 (ephemeral port) in a background thread."""

    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.hit_times: dict[str, list[float]] = defaultdict(list)
        self.delay = 0.0
        self.slow_seconds = 3.0
        self.retry_after = "1"
        self.big_size = 300_000
        self.trickle_interval = 0.2
        self.trickle_bytes = 50  # about 10 s: a client without a deadline fails slowly, not never
        self.has_private = False
        self.private_hits: Counter[str] = Counter()  # path -> requests received on PRIVATE_HOST
        self.port = 0
        self.in_flight = 0
        self.max_in_flight = 0  # most requests handled at once, over the server's life
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def private_url(self, path: str) -> str:
        return f"http://{PRIVATE_HOST}:{self.port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "FetchServer":
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True, name="fetch-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            future.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._count_middleware])
        r = app.router
        r.add_get("/img/{name}", self._image)
        r.add_get("/flaky/{name}", self._flaky)
        r.add_get("/ratelimited/{name}", self._ratelimited)
        r.add_get("/missing/{name}", self._missing)
        r.add_get("/error500/{name}", self._error500)
        r.add_get("/slow/{name}", self._slow)
        r.add_get("/truncated/{name}", self._truncated)
        r.add_get("/html/{name}", self._html)
        r.add_get("/redirect/{name}", self._redirect)
        r.add_get("/redirect-loop", self._redirect_loop)
        r.add_get("/big", self._big)
        r.add_get("/big-chunked", self._big_chunked)
        r.add_get("/reset/{name}", self._reset)
        r.add_get("/reset-once/{name}", self._reset_once)
        r.add_get("/iiif/{name}/full/675,/0/default.jpg", self._iiif)
        r.add_get("/trickle/{name}", self._trickle)
        r.add_get("/bad-retry-after/{name}", self._bad_retry_after)
        r.add_get("/redirect-private/{name}", self._redirect_private)
        r.add_get("/redirect-host/{host}/{name}", self._redirect_host)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        try:
            await web.TCPSite(self._runner, PRIVATE_HOST, self.port).start()
            self.has_private = True
        except OSError:
            pass

    @web.middleware
    async def _count_middleware(self, request: web.Request, handler):
        with self._lock:
            self.hits[request.path] += 1
            if request.transport.get_extra_info("sockname")[0] == PRIVATE_HOST:
                self.private_hits[request.path] += 1
            self.hit_times[request.path].append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    # -- handlers -------------------------------------------------------------------------

    def _body(self, request: web.Request) -> bytes:
        name = request.match_info["name"]
        if name not in self.images:
            raise web.HTTPNotFound()
        return self.images[name]

    def _send(self, data: bytes) -> web.Response:
        return web.Response(body=data, content_type="application/octet-stream")

    async def _image(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._send(self._body(request))

    async def _flaky(self, request: web.Request) -> web.Response:
        if self.count(request.path) == 1:
            return web.Response(status=500, text="try again")
        return self._send(self._body(request))

    async def _ratelimited(self, request: web.Request) -> web.Response:
        if self.count(request.path) == 1:
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        return self._send(self._body(request))

    async def _missing(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="not found")

    async def _error500(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.slow_seconds)
        return self._send(self._body(request))

    async def _truncated(self, request: web.Request) -> web.Response:
        data = self._body(request)
        return self._send(data[: len(data) // 2])

    async def _html(self, request: web.Request) -> web.Response:
        page = "<!DOCTYPE html><html><body><h1>Service unavailable</h1></body></html>"
        return web.Response(text=page, content_type="text/html")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/img/{request.match_info['name']}")

    async def _redirect_loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/redirect-loop")

    async def _big(self, request: web.Request) -> web.Response:
        return self._send(b"\0" * self.big_size)

    async def _big_chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"\0" * 16384
        try:
            for _ in range(self.big_size // len(chunk) + 1):
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return response

    async def _drop(self, request: web.Request, data: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[: len(data) // 3])
        request.transport.abort()
        return response

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        return await self._drop(request, self._body(request))

    async def _reset_once(self, request: web.Request) -> web.StreamResponse:
        data = self._body(request)
        if self.count(request.path) == 1:
            return await self._drop(request, data)
        return self._send(data)

    async def _iiif(self, request: web.Request) -> web.Response:
        return self._send(self._body(request))

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        data = self._body(request)
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        try:
            for i in range(min(len(data), self.trickle_bytes)):
                await response.write(data[i:i + 1])
                await asyncio.sleep(self.trickle_interval)
        except (ConnectionError, RuntimeError):
            return response  # the client gave up, as it should
        request.transport.abort()
        return response

    async def _bad_retry_after(self, request: web.Request) -> web.Response:
        if self.count(request.path) == 1:
            return web.Response(status=429, headers={"Retry-After": "\u00b2"})
        return self._send(self._body(request))

    async def _redirect_private(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(self.private_url(f"/img/{request.match_info['name']}"))

    async def _redirect_host(self, request: web.Request) -> web.Response:
        host, name = request.match_info["host"], request.match_info["name"]
        raise web.HTTPFound(f"http://{host}:{self.port}/img/{name}")
