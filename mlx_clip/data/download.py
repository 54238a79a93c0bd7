"""HTTP downloads for fetch: bounded concurrency (overall and per host), retries with backoff on
timeouts, connection errors, 5xx and 429 (honouring Retry-After), a total deadline per image, a
size cap, and redirects followed one by one so a public host cannot send a request to a private
address (``redirect_private``, the rule :mod:`.redirect_guard` owns) unless ``allow_private``.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
from collections import defaultdict
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import aiohttp
from yarl import URL

from .redirect_guard import CheckedResolver, PrivateAddressRefused, RedirectGuard

REDIRECTS = (301, 302, 303, 307, 308)


class DownloadFailure(Exception):
    """Why one URL gave no image body: ``reason`` (a failures.jsonl code), whether to retry, how long."""

    def __init__(self, reason: str, detail: str = "", retry: bool = False, wait: float | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retry, self.wait = reason, detail, retry, wait


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,9}", value):  # ASCII digits only: "²".isdigit() is True too
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


@asynccontextmanager
async def open_downloader(config: Any) -> AsyncIterator[Downloader]:
    """A :class:`Downloader` for one fetch run, its sessions closed on leaving.

    Two sessions, each with its own connection pool and DNS cache: one for first requests (and
    redirects a private catalogue sends), one whose resolver refuses private addresses, for
    redirects from public hosts. Neither reuses a connection the other opened.
    """
    guard = RedirectGuard(config.private_address, config.allow_private)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_seconds, sock_read=config.read_timeout)

    def session(resolver: CheckedResolver) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=config.concurrency, limit_per_host=config.per_host,
                                         resolver=resolver)
        return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers={"User-Agent": config.user_agent})

    async with session(guard.open) as first, session(guard.refusing) as guarded:
        yield Downloader(config, first, guarded, guard)


class Downloader:
    """Downloads for one fetch run (made by :func:`open_downloader`); ``downloads`` counts bodies received."""

    def __init__(self, config: Any, session: aiohttp.ClientSession, guarded: aiohttp.ClientSession,
                 guard: RedirectGuard):
        """``config`` is the run's FetchConfig: its timeouts, retries and limits; ``guarded`` the
        session whose resolver refuses private addresses, for what ``guard`` says to guard."""
        self.config = config
        self.session = session
        self.guarded = guarded
        self.guard = guard
        self.downloads = 0
        self._slots = asyncio.Semaphore(config.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(config.per_host))

    async def download(self, url: str) -> bytes:
        """The body at ``url``, retried on timeouts, connection errors, 5xx and 429.

        The deadline starts with the first request (not while waiting for a slot) and covers
        every try and every wait between tries.
        """
        c = self.config
        several = len(re.findall(r"https?://", url, re.IGNORECASE))
        if several > 1:  # "a.jpg|b.jpg" in one CSV cell was requested whole and said http_404
            raise DownloadFailure("several_urls", f"the field holds {several} URLs; fetch takes one image per record: "
                                  "give each image its own record, or --url-field one of them (media.0.url)")
        try:
            parsed = URL(url)
        except (ValueError, TypeError) as e:
            raise DownloadFailure("bad_url", str(e)[:200]) from None
        if parsed.scheme not in ("http", "https"):
            raise DownloadFailure("bad_scheme", f"scheme '{parsed.scheme}' is not http or https")
        if not parsed.host:
            raise DownloadFailure("bad_url", "no host")
        host = parsed.host
        loop = asyncio.get_running_loop()
        ends: float | None = None
        failure = DownloadFailure("connection_error")
        for attempt in range(c.retries + 1):
            try:
                async with self._hosts[host], self._slots:
                    if ends is None:
                        ends = loop.time() + c.deadline
                    try:
                        async with asyncio.timeout(ends - loop.time()):
                            return await self._get(parsed)
                    except TimeoutError:
                        raise DownloadFailure(
                            "deadline", f"no complete response within {c.deadline:g} s"
                        ) from None
            except DownloadFailure as e:
                failure = e
            if not failure.retry or attempt == c.retries:
                break
            if failure.wait is not None:
                delay = min(failure.wait, c.max_retry_after)
            else:
                delay = min(c.max_backoff, c.backoff * 2**attempt) * random.uniform(0.5, 1.0)
            if ends is not None and loop.time() + delay >= ends:
                failure.detail += f" (no time left for another try within {c.deadline:g} s)"
                break
            await asyncio.sleep(delay)
        raise failure

    async def _get(self, url: URL) -> bytes:
        """One GET, following redirects: the body, or a :class:`DownloadFailure` saying whether to retry.

        Redirects are followed here, not by aiohttp, so that once a public host has redirected,
        every later hop goes over the guarded session, whose resolver refuses private addresses.
        """
        c = self.config
        session, source = self.session, url
        try:
            for _ in range(c.max_redirects + 1):
                async with session.get(url, allow_redirects=False) as response:
                    location = response.headers.get("Location")
                    if response.status not in REDIRECTS or not location:
                        return await self._body(response)
                target = url.join(URL(location))
                if target.scheme not in ("http", "https") or not target.host:
                    raise DownloadFailure("bad_redirect", f"to {str(target)[:150]}")
                source, url = url, target
                if session is self.guarded or self.guard.guards(source):
                    self.guard.check_literal(url)
                    session = self.guarded
            raise DownloadFailure("too_many_redirects", f"more than {c.max_redirects}")
        except PrivateAddressRefused as e:
            raise DownloadFailure(
                "redirect_private",
                f"{source.host} redirected to {url.host} ({e.address}), a private address; "
                "pass --allow-private to follow such redirects",
            ) from None
        except (aiohttp.InvalidURL, ValueError) as e:
            # A host IDNA cannot encode (empty label in ``images.example..org``, a label over 63
            # characters, a lone surrogate) raises UnicodeError, a ValueError, before any lookup.
            raise DownloadFailure("bad_url", f"{type(e).__name__}: {e}"[:200]) from None
        except asyncio.TimeoutError:
            raise DownloadFailure("timeout", "no response in time", retry=True) from None
        except (aiohttp.ClientError, OSError) as e:
            detail = f"{type(e).__name__}: {e}"[:200]
            raise DownloadFailure("connection_error", detail, retry=True) from None

    async def _body(self, response: aiohttp.ClientResponse) -> bytes:
        """The body of a final (non-redirect) response, within ``max_bytes``."""
        c = self.config
        status = response.status
        if status == 429 or status >= 500:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            raise DownloadFailure(f"http_{status}", response.reason or "", retry=True, wait=wait)
        if status >= 300:
            raise DownloadFailure(f"http_{status}", response.reason or "")
        length = response.content_length
        if length is not None and length > c.max_bytes:
            raise DownloadFailure("too_large", f"Content-Length {length:,} > {c.max_bytes:,} bytes")
        body = bytearray()
        async for chunk in response.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > c.max_bytes:
                raise DownloadFailure("too_large", f"body passed {c.max_bytes:,} bytes")
        self.downloads += 1
        return bytes(body)
