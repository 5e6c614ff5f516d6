"""Where the proxy may connect: public addresses only, resolved once and pinned (no DNS rebinding).

The proxy resolves the destination itself, refuses loopback, private, link-local, shared, multicast,
reserved and cloud-metadata addresses, and connects to exactly the address it checked. An IPv6 address that
carries an IPv4 one (IPv4-mapped or -compatible, NAT64, 6to4, Teredo, ISATAP) is judged by the IPv4 it reaches;
every spelling of an IP literal (`0x7f.1`, `2130706433`, `[::ffff:7f00:1]`) is read as its address and never
sent to DNS; every address a name resolves to must be public. An operator may map
named upstreams to fixed addresses (`AILERON_UPSTREAM_RESOLVE="host:port=ip:port,..."`), for tests and for
private upstreams; only those mappings skip the private-range check. Pure, apart from the resolver call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Lookup = Callable[[str, int], Awaitable[list[str]]]

# IPv4 that is never a public destination: the IANA special-purpose registry (RFC 6890 and successors), multicast,
# class E and broadcast. Written out rather than `ipaddress.is_global`, whose answers change between Python
# patch releases.
_IPV4_NOT_PUBLIC = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network": Linux connects 0.0.0.0 to the local host
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT); Alibaba Cloud's metadata at 100.100.100.200
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local; the AWS, GCP and Azure metadata service at 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments; Oracle Cloud's metadata at 192.0.0.192
        "192.0.2.0/24",
        "192.88.99.0/24",  # the 6to4 relay anycast: a tunnel to some other address
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 (broadcast)
    )
)
# IPv6 is public only inside global unicast 2000::/3, less these; everything outside it (::, ::1, fc00::/7,
# fe80::/10, fec0::/10, ff00::/8, 100::/64, 5f00::/16, ...) is not.
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV6_NOT_PUBLIC = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments: benchmarking, ORCHID, ... (Teredo, inside it, is read below)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    )
)
# Forms that carry an IPv4 address: they reach what that address reaches (through a translator, a tunnel or the
# host's own IPv4 stack), so they are classified by it. The last 32 bits unless said otherwise.
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 6145)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated; also :: and ::1, read as 0.0.0.0 and 0.0.0.1
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: the operator picks the layout inside it
_NAT64_LOCAL_USE_96 = ipaddress.IPv6Network("64:ff9b:1::/96")  # the one layout that can be read
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056: the IPv4 is bits 16-47
_TEREDO = ipaddress.IPv6Network("2001::/32")  # RFC 4380: server bits 32-63, client last 32 bits inverted
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)  # RFC 5214 interface identifiers ::0:5efe:a.b.c.d and ::200:5efe:a.b.c.d

# Beyond the ranges above: cloud metadata services that sit on otherwise odd addresses.
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
    """Whether the proxy may connect to `address` (an IP literal; anything else is not public)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return _public(ip)


def _public(ip: Address) -> bool:
    if ip in _METADATA:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in _IPV4_NOT_PUBLIC)
    if ip.scope_id is not None:
        return False  # only a link-local address has a zone, and a zoned address names this host's interface
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        return bool(embedded) and all(_public(v4) for v4 in embedded)
    if ip not in _IPV6_GLOBAL_UNICAST or any(ip in net for net in _IPV6_NOT_PUBLIC):
        return False
    # A global prefix with an ISATAP interface identifier tunnels to the IPv4 in its last 32 bits.
    return (int(ip) >> 32) & 0xFFFFFFFF not in _ISATAP_IDS or _public(_last32(ip))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address reaches by its transition form, or None when it is not one.

    An empty list means a form whose IPv4 cannot be read (the local-use NAT64 prefix outside its /96 layout).
    """
    if ip in _IPV4_MAPPED or ip in _IPV4_TRANSLATED or ip in _IPV4_COMPATIBLE or ip in _NAT64_WELL_KNOWN:
        return [_last32(ip)]
    if ip in _NAT64_LOCAL_USE:
        return [_last32(ip)] if ip in _NAT64_LOCAL_USE_96 else []
    if ip in _SIX_TO_FOUR:
        return [ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)]
    if ip in _TEREDO:
        server = ipaddress.IPv4Address((int(ip) >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)
        return [server, client]
    return None


def _last32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def parse_literal(host: str) -> Address | None:
    """The address a CONNECT host names, or None for a name to look up; Unresolvable for neither.

    Reads IPv4 the way inet_aton and the WHATWG URL standard do (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`),
    so no spelling of an address is ever sent to DNS, and anything with a colon must be an IPv6 literal.
    """
    text = host.strip()
    if text.startswith("[") or text.endswith("]") or ":" in text:
        try:
            if text.startswith("[") != text.endswith("]"):
                raise ValueError(text)
            return ipaddress.IPv6Address(text.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise Unresolvable(f"{host} is not an IPv6 address") from None
    labels = text.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # a trailing dot
    if not labels or not _numeric(labels[-1]):
        if "%" in text:
            raise Unresolvable(f"{host} is not a host name")
        return None
    if len(labels) > 4:
        raise Unresolvable(f"{host} is not an IPv4 address")
    try:
        numbers = [_ipv4_number(label) for label in labels]
    except ValueError:
        raise Unresolvable(f"{host} is not an IPv4 address") from None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise Unresolvable(f"{host} is not an IPv4 address")
    value = last
    for i, n in enumerate(leading):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _numeric(label: str) -> bool:
    """WHATWG "ends in a number": all decimal digits, or an IPv4 number in another base."""
    if label.isascii() and label.isdigit():
        return True
    try:
        _ipv4_number(label)
    except ValueError:
        return False
    return True


def _ipv4_number(label: str) -> int:
    if not label.isascii():
        raise ValueError(label)
    lowered = label.lower()
    if lowered.startswith("0x"):
        digits, base = lowered[2:], 16
    elif len(lowered) > 1 and lowered.startswith("0"):
        digits, base = lowered[1:], 8
    else:
        digits, base = lowered, 10
    if digits == "":
        if base == 16:
            return 0  # WHATWG reads a bare "0x" as zero
        raise ValueError(label)
    if not all(c in "0123456789abcdef"[:base] for c in digits):
        raise ValueError(label)
    return int(digits, base)


class Resolver:
    def __init__(
        self, mapping: dict[tuple[str, int], tuple[str, int]] | None = None, *, lookup: Lookup | None = None
    ) -> None:
        self.mapping = mapping or {}
        self.lookup = lookup or _getaddrinfo

    async def resolve(self, host: str, port: int) -> Target:
        key = (host.strip().lower().rstrip("."), port)
        if key in self.mapping:
            ip, ip_port = self.mapping[key]
            return Target(host=key[0], port=ip_port, address=ip, mapped=True)
        literal = parse_literal(key[0])
        if literal is not None:
            addresses = [str(literal)]
        else:
            addresses = await self.lookup(key[0], port)
            if not addresses:
                raise Unresolvable(f"{host} does not resolve")
        # Every address must be public: a name that answers both a public and a private address is refused.
        for address in addresses:
            if not is_public(address):
                raise Blocked(host, address)
        return Target(host=key[0], port=port, address=addresses[0], mapped=False)


async def _getaddrinfo(name: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Unresolvable(f"{name} does not resolve") from None
    return [str(info[4][0]) for info in infos]
