"""Where the proxy may connect: public addresses only, resolved once and pinned (no DNS rebinding).

The proxy resolves the destination itself, refuses loopback, private, link-local, shared, multicast,
reserved and cloud-metadata addresses, and connects to exactly the address it checked. An operator may map
named upstreams to fixed addresses (`AILERON_UPSTREAM_RESOLVE="host:port=ip:port,..."`), for tests and for
private upstreams; only those mappings skip the private-range check. Pure, apart from the resolver call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

# Beyond what ipaddress calls non-global: the cloud metadata services that sit on otherwise odd addresses.
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class ResolveError(ValueError):
    """AILERON_UPSTREAM_RESOLVE is malformed; the message says which entry."""


class Blocked(Exception):
    """The destination resolves to an address the proxy will not reach."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, which is not a public address")
        self.host = host
        self.address = address


class Unresolvable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    address: str  # the IP actually connected to
    mapped: bool


def parse_resolve_map(spec: str) -> dict[tuple[str, int], tuple[str, int]]:
    """`host:port=ip:port,...` into a mapping; raises ResolveError naming the bad entry."""
    mapping: dict[tuple[str, int], tuple[str, int]] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            left, right = entry.split("=", 1)
            host, port = _hostport(left)
            ip, ip_port = _hostport(right)
            ipaddress.ip_address(ip)
        except ValueError:
            raise ResolveError(f"AILERON_UPSTREAM_RESOLVE: {entry!r} is not host:port=ip:port") from None
        mapping[(host.lower(), port)] = (ip, ip_port)
    return mapping


def _hostport(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    return host, int(port)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and ip not in _METADATA


class Resolver:
    def __init__(self, mapping: dict[tuple[str, int], tuple[str, int]] | None = None) -> None:
        self.mapping = mapping or {}

    async def resolve(self, host: str, port: int) -> Target:
        key = (host.lower().rstrip("."), port)
        if key in self.mapping:
            ip, ip_port = self.mapping[key]
            return Target(host=key[0], port=ip_port, address=ip, mapped=True)
        try:
            literal = ipaddress.ip_address(key[0].strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(key[0], port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                raise Unresolvable(f"{host} does not resolve") from None
            addresses = [str(info[4][0]) for info in infos]
            if not addresses:
                raise Unresolvable(f"{host} does not resolve")
        # Every address must be public: a name that answers both a public and a private address is refused.
        for address in addresses:
            if not is_public(address):
                raise Blocked(host, address)
        return Target(host=key[0], port=port, address=addresses[0], mapped=False)
