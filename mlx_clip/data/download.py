"""HTTP downloads for fetch: bounded concurrency (overall and per host), retries with backoff on
timeouts, connection errors, 5xx and 429 (honouring Retry-After), a total deadline per image, a
size cap, and redirects followed one by one so a public host cannot send a request to a private
address (``redirect_private``) unless ``allow_private``.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import re
import socket
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import aiohttp
from yarl import URL

REDIRECTS = (301, 302, 303, 307, 308)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_private_address(address: IPAddress) -> bool:
    """True for any address that is not globally routed: loopback, private, link-local, ...

    An IPv4 address written as IPv6 (``::ffff:127.0.0.1``) is judged as the IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


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


class Downloader:
    """Downloads for one fetch run over one aiohttp session; ``downloads`` counts bodies received."""

    def __init__(self, config: Any, session: aiohttp.ClientSession):
        """``config`` is the run's FetchConfig: its timeouts, retries, limits and redirect policy."""
        self.config = config
        self.session = session
        self.downloads = 0
        self._slots = asyncio.Semaphore(config.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(config.per_host))

    async def download(self, url: str) -> bytes:
        """The body at ``url``, retried on timeouts, connection errors, 5xx and 429.

        The deadline starts with the first request (not while waiting for a slot) and covers
        every try and every wait between tries.
        """
        c = self.config
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

        Redirects are followed here, not by aiohttp, so that each one's target can be checked
        before any byte is sent to it.
        """
        c = self.config
        try:
            for _ in range(c.max_redirects + 1):
                async with self.session.get(url, allow_redirects=False) as response:
                    location = response.headers.get("Location")
                    if response.status not in REDIRECTS or not location:
                        return await self._body(response)
                target = url.join(URL(location))
                if target.scheme not in ("http", "https") or not target.host:
                    raise DownloadFailure("bad_redirect", f"to {str(target)[:150]}")
                await self._check_redirect(url, target)
                url = target
            raise DownloadFailure("too_many_redirects", f"more than {c.max_redirects}")
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

    async def _check_redirect(self, source: URL, target: URL) -> None:
        """Refuse a redirect from a public host to a private address (``redirect_private``).

        A host whose every address is private (a catalogue on the local network) may redirect
        anywhere, as may any host with ``allow_private``.
        """
        c = self.config
        if c.allow_private:
            return
        target_addresses = await self._addresses(target)
        if not any(map(c.private_address, target_addresses)):
            return
        if all(map(c.private_address, await self._addresses(source))):
            return
        raise DownloadFailure(
            "redirect_private",
            f"{source.host} redirected to {target.host} ({target_addresses[0]}), a private "
            "address; pass --allow-private to follow such redirects",
        )

    async def _addresses(self, url: URL) -> list[IPAddress]:
        """The addresses ``url``'s host resolves to (the literal address if it is one)."""
        assert url.host is not None
        try:
            return [ipaddress.ip_address(url.host)]
        except ValueError:
            pass
        infos = await asyncio.get_running_loop().getaddrinfo(
            url.host, url.port, type=socket.SOCK_STREAM
        )
        return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]

