"""The redirect rule of fetch: a redirect from a public host must not reach a loopback,
link-local or private address (``redirect_private``) unless ``allow_private``.

The rule is applied where aiohttp picks the address it connects to, its resolver, not by a
lookup of its own beforehand: a DNS server answering "public" to such a lookup and
"127.0.0.1" to the connection's (DNS rebinding) would get past a separate check. Host names
written as addresses never reach a resolver, so those are judged from the URL.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_private_address(address: IPAddress) -> bool:
    """True for any address that is not globally routed: loopback, private, link-local, ...

    An IPv4 address written as IPv6 (``::ffff:127.0.0.1``) is judged as the IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an address when it is written as one (``10.0.0.1``, ``::1``), else None."""
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None


class PrivateAddressRefused(Exception):
    """A redirected request would have connected to ``address``, a private address of ``host``."""

    def __init__(self, host: str, address: IPAddress):
        super().__init__(f"{host} is at {address}, a private address")
        self.host, self.address = host, address


class CheckedResolver(AbstractResolver):
    """aiohttp's ThreadedResolver (the system's getaddrinfo, whether or not aiodns is installed)
    that judges every answer it hands to the connector.

    It notes which host names got a public address in this run (``all_private``); with
    ``refuse_private`` it raises :class:`PrivateAddressRefused` instead of returning an answer
    holding a private address, so that answer is never connected to.
    """

    def __init__(self, private_address: Callable[[IPAddress], bool], refuse_private: bool):
        self._inner = ThreadedResolver()
        self._private = private_address
        self._refuse = refuse_private
        self.all_private: dict[str, bool] = {}  # host name -> every address it was given is private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = await self._inner.resolve(host, port, family)
        addresses = [ipaddress.ip_address(str(r["host"]).split("%")[0]) for r in answer]
        private = [a for a in addresses if self._private(a)]
        every = bool(addresses) and len(private) == len(addresses)
        self.all_private[host] = self.all_private.get(host, True) and every
        if self._refuse and private:
            raise PrivateAddressRefused(host, private[0])
        return answer

    async def close(self) -> None:
        await self._inner.close()


class RedirectGuard:
    """The one owner of the redirect rule for a fetch run.

    A host whose every address is private (a catalogue on the local network) may redirect
    anywhere, as may any host with ``allow_private``. Any other host's redirect is followed
    over the connector whose resolver is ``refusing``, and so is every later hop of that chain.
    """

    def __init__(self, private_address: Callable[[IPAddress], bool], allow_private: bool):
        self.private_address = private_address
        self.allow_private = allow_private
        self.open = CheckedResolver(private_address, refuse_private=False)  # first requests
        self.refusing = CheckedResolver(private_address, refuse_private=True)

    def guards(self, source: URL) -> bool:
        """Whether a redirect from ``source`` must stay off private addresses.

        A host name counts as private only if every address the first-request connector was
        given for it in this run was private: those are the addresses its responses came from.
        """
        if self.allow_private:
            return False
        host = source.raw_host or ""
        literal = literal_address(host)
        if literal is not None:
            return not self.private_address(literal)
        return not self.open.all_private.get(host, False)

    def check_literal(self, target: URL) -> None:
        """Refuse a guarded redirect to a host written as a private address (no resolver sees it)."""
        literal = literal_address(target.raw_host or "")
        if literal is not None and self.private_address(literal):
            raise PrivateAddressRefused(target.raw_host or "", literal)
