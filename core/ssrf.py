"""The outbound address guard: steps and notifications reach the internet, never Conveyor's own network.

A definition author chooses the URLs Conveyor calls, so a URL is hostile input: ``http://169.254.169.254/``
would hand out the cloud machine's credentials and ``http://127.1:7233/`` would talk to Temporal itself.
Every outbound request goes through :class:`GuardedTransport`, which

- reads the host the way the C resolver does (``127.1``, ``0x7f000001``, ``2130706433``, ``0177.0.0.1`` are
  all loopback), or resolves a name **once**;
- refuses loopback, private, link-local, carrier-grade NAT, IPv4-mapped IPv6, cloud metadata, unspecified,
  multicast and every other non-global address, unless ``CONVEYOR_OUTBOUND_ALLOW`` lists it;
- connects to the address it checked (the URL's host becomes that IP; the ``Host`` header and TLS SNI keep
  the name, so certificates still verify), so a second DNS answer cannot swap in another address;
- sees every redirect hop, because httpx sends each hop through the transport.

Response size and total time are capped by the callers (``activities.http.send``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from temporalio.exceptions import ApplicationError

from core.settings import Settings
from workflows import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: the system resolver in production, a table in tests."""

OUTBOUND_BLOCKED: Final = errors.OUTBOUND_BLOCKED
"""``ApplicationError.type`` of a refused request; non-retryable, as the address will not change class."""

_CLASSES: Final[list[tuple[str, list[IPNetwork]]]] = [
    (name, [ipaddress.ip_network(n) for n in networks])
    for name, networks in [
        # Metadata first: it sits inside link-local and CGNAT ranges but deserves its own name.
        (
            "cloud metadata",
            ["169.254.169.254/32", "169.254.170.2/32", "100.100.100.200/32", "fd00:ec2::254/128"],
        ),
        ("unspecified", ["0.0.0.0/8", "::/128"]),
        ("loopback", ["127.0.0.0/8", "::1/128"]),
        ("private", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]),
        ("link-local", ["169.254.0.0/16", "fe80::/10"]),
        ("carrier-grade NAT", ["100.64.0.0/10"]),
        ("multicast", ["224.0.0.0/4", "ff00::/8"]),
    ]
]
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_TLS_POOLS: Final = 64
"""Server names whose TLS connection pools are kept; the least recently used beyond are closed."""
_PART: Final = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


class OutboundBlocked(ApplicationError):
    """A request to an address Conveyor must not reach; fails the step at once, naming the address class."""

    def __init__(self, host: str, address: str, address_class: str) -> None:
        super().__init__(
            f"outbound request to {host!r} refused: {address} belongs to the {address_class} range "
            "(allow it with CONVEYOR_OUTBOUND_ALLOW)",
            {"host": host, "address": address, "address_class": address_class},
            type=OUTBOUND_BLOCKED,
            non_retryable=True,
        )
        self.host = host
        self.address = address
        self.address_class = address_class


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form ``inet_aton`` or an IPv6 literal accepts; None for a name."""
    host = host.strip("[]")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    parts = host.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    values = [
        int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8) if p[0] == "0" else int(p)
        for p in parts
    ]
    # a.b.c.d, a.b.c (c fills 16 bits), a.b (b fills 24 bits), a (32 bits): the last part fills the rest.
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (24 - 8 * index)
    return ipaddress.IPv4Address(number)


def address_class(address: IPAddress) -> str | None:
    """Why ``address`` is off limits (``"loopback"``, ``"cloud metadata"``, ...), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            inner = address_class(mapped) or "public"
            return f"IPv4-mapped IPv6 ({inner})"
        embedded = address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None
        )
        if embedded is not None and address_class(embedded) is not None:
            return f"IPv4-embedding IPv6 ({address_class(embedded)})"
    for name, networks in _CLASSES:
        if any(address in network for network in networks):
            return name
    return None if address.is_global else "reserved"


@dataclass(frozen=True)
class OutboundPolicy:
    """What the guard lets through besides public addresses: networks and exact host names."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> OutboundPolicy:
        """Entries are CIDRs (``10.0.0.0/8``), addresses (``127.0.0.1``, ``::1``) or host names."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().removesuffix("."))
        return cls(tuple(networks), frozenset(hosts))

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        """``CONVEYOR_OUTBOUND_ALLOW`` plus the AI provider's host: the operator chose it, not a user."""
        ai_host = urlsplit(settings.ai_base_url).hostname
        return cls.from_entries([*settings.outbound_allow, *([ai_host] if ai_host else [])])

    def refusal(self, address: IPAddress) -> str | None:
        """The class that makes ``address`` refused, or None when it is public or allow-listed."""
        if any(address in network for network in self.networks):
            return None
        return address_class(address)


@dataclass(frozen=True)
class Target:
    """A checked destination: the name from the URL and the one address to connect to."""

    host: str
    address: IPAddress


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives ``host`` (A and AAAA)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class OutboundGuard:
    """Checks a URL's destination against an :class:`OutboundPolicy`, resolving its name once."""

    def __init__(self, policy: OutboundPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self._resolver = resolver

    async def check(self, url: str | httpx.URL) -> Target:
        """The address to connect to for ``url``; raises :class:`OutboundBlocked` for a refused one."""
        refuse_non_web(url)
        _scheme, host, port = _destination(url)
        literal = ip_literal(host)
        if literal is not None:
            refused = self.policy.refusal(literal)
            if refused is not None:
                raise OutboundBlocked(host, str(literal), refused)
            return Target(host, literal)
        try:
            found = await self._resolver(host, port)
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
        if not addresses:
            raise httpx.ConnectError(f"cannot resolve {host!r}: no address")
        if host.lower().removesuffix(".") not in self.policy.hosts:
            # Every answer must pass: one private record among public ones is how DNS rebinding starts.
            for address in addresses:
                refused = self.policy.refusal(address)
                if refused is not None:
                    raise OutboundBlocked(host, str(address), refused)
        return Target(host, addresses[0])


def refuse_non_web(url: str | httpx.URL) -> None:
    """Fail the step unless ``url`` is an http(s) URL with a host: ``OutboundBlocked`` for another scheme.

    Senders call it before httpx sees the URL, since httpx reads ``file:///etc/passwd`` (no host) as the
    relative URL ``/etc/passwd``; the guard calls it again for every redirect hop.
    """
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ApplicationError(
            f"outbound requests use http or https, not {scheme!r}" if scheme else "the URL has no scheme",
            type=OUTBOUND_BLOCKED,
            non_retryable=True,
        )
    if not parts.hostname:
        raise ApplicationError("the URL has no host", type=errors.CONFIG_INVALID, non_retryable=True)
    try:
        parts.port  # noqa: B018 - reading it is the check: urlsplit parses the port lazily
    except ValueError as exc:
        raise ApplicationError(
            f"the URL's port: {exc}", type=errors.CONFIG_INVALID, non_retryable=True
        ) from None


def refuse_literal(url: str) -> None:
    """Raise :class:`OutboundBlocked` if ``url``'s host is a non-public address literal.

    For URLs httpx cannot parse itself (it refuses ``0177.0.0.1``), so the step still says *why* it failed.
    """
    try:
        _scheme, host, _port = _destination(url)
    except ValueError:
        return
    literal = ip_literal(host)
    refused = address_class(literal) if literal is not None else None
    if literal is not None and refused is not None:
        raise OutboundBlocked(host, str(literal), refused)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks each request (so each redirect hop) and pins the checked address.

    Connection pools are keyed by the address dialled, so TLS gets one pool per server name: a connection
    whose certificate was checked for one name is never reused for another name on the same address.
    """

    def __init__(
        self,
        guard: OutboundGuard,
        make_transport: Callable[[], httpx.AsyncBaseTransport] = httpx.AsyncHTTPTransport,
    ) -> None:
        self._guard = guard
        self._make = make_transport
        self._plain = make_transport()
        self._tls: OrderedDict[str, httpx.AsyncBaseTransport] = OrderedDict()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = await self._guard.check(request.url)
        extensions: dict[str, Any] = dict(request.extensions)
        inner = self._plain
        if request.url.scheme == "https":
            # Certificates are checked against the name, not the address we dial.
            extensions["sni_hostname"] = target.host
            inner = await self._tls_transport(target.host)
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(target.address)),
            headers=request.headers,  # keeps Host: <name>, set when the request was built
            stream=request.stream,
            extensions=extensions,
        )
        return await inner.handle_async_request(pinned)

    async def _tls_transport(self, host: str) -> httpx.AsyncBaseTransport:
        name = host.lower()
        transport = self._tls.get(name)
        if transport is None:
            transport = self._tls[name] = self._make()
            if len(self._tls) > _TLS_POOLS:
                _, oldest = self._tls.popitem(last=False)
                await oldest.aclose()
        self._tls.move_to_end(name)
        return transport

    async def aclose(self) -> None:
        await self._plain.aclose()
        for transport in self._tls.values():
            await transport.aclose()
        self._tls.clear()


def outbound_client(
    settings: Settings, *, resolver: Resolver = system_resolver, **options: Any
) -> httpx.AsyncClient:
    """The worker's HTTP client: redirects followed, every hop through the guard."""
    guard = OutboundGuard(OutboundPolicy.from_settings(settings), resolver)
    return httpx.AsyncClient(follow_redirects=True, transport=GuardedTransport(guard), **options)


def _destination(url: str | httpx.URL) -> tuple[str, str, int]:
    if isinstance(url, httpx.URL):
        scheme, host, port = url.scheme, url.host, url.port
    else:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname or "", parts.port
    if not host:
        raise ValueError(f"no host in {str(url)!r}")
    return scheme.lower(), host, port or (443 if scheme.lower() == "https" else 80)
