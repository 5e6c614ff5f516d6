"""The address guard over a table of forms: every way to write a non-public address is refused, public ones pass."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from dataplane.guard import Blocked, Resolver, Unresolvable, is_public

# Each written the way an attacker would try it next; the comment says what it reaches.
NOT_PUBLIC = [
    # IPv4 special-purpose ranges
    "0.0.0.0",  # noqa: S104 - an address under test, not a bind; Linux connects it to the local host
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",  # shared address space (CGNAT)
    "100.100.100.200",  # Alibaba Cloud's metadata service, inside 100.64/10
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",  # AWS, GCP and Azure metadata
    "169.254.170.2",  # ECS task metadata
    "172.16.5.4",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.0.192",  # Oracle Cloud metadata
    "192.0.2.1",
    "192.88.99.1",  # the 6to4 relay anycast: a tunnel to somewhere else
    "192.168.1.1",
    "198.18.0.1",  # benchmarking 198.18/15
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    # IPv6 special-purpose ranges
    "::",
    "::1",
    "0:0:0:0:0:0:0:1",
    "fe80::1",
    "FE80::1",
    "fec0::1",  # site-local (deprecated, still routed by some stacks)
    "fc00::1",  # unique local
    "fd00:ec2::254",  # AWS metadata over IPv6
    "ff02::1",  # multicast
    "ff05::1:3",
    "100::1",  # discard-only
    "2001:db8::1",  # documentation
    "3fff::1",  # documentation (RFC 9637)
    "2001:2::1",  # benchmarking
    "2001:10::1",  # ORCHID
    "5f00::1",  # outside global unicast 2000::/3
    "4000::1",
    # zone ids: only a link-local address has one, and a scoped address is never a public destination
    "fe80::1%eth0",
    "fe80::1%1",
    "2606:4700::6810:84e5%eth0",
    # IPv4-mapped ::ffff:0:0/96 and IPv4-translated ::ffff:0:0:0/96
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::FFFF:7F00:0001",
    "0:0:0:0:0:ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "::ffff:10.1.2.3",
    "::ffff:0.0.0.0",
    "::ffff:0:127.0.0.1",
    "::ffff:0:7f00:1",
    "::ffff:0:a9fe:a9fe",
    # IPv4-compatible ::/96
    "::127.0.0.1",
    "::7f00:1",
    "::169.254.169.254",
    "::10.0.0.1",
    "::0.0.0.2",
    # NAT64, well-known prefix 64:ff9b::/96
    "64:ff9b::7f00:1",
    "64:ff9b::127.0.0.1",
    "64:FF9B::7F00:1",
    "0064:ff9b:0000:0000:0000:0000:7f00:0001",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::169.254.169.254",
    "64:ff9b::a00:1",
    "64:ff9b::c0a8:101",
    "64:ff9b::6440:1",  # 100.64.0.1
    "64:ff9b::",  # 0.0.0.0
    "64:ff9b::e000:1",  # multicast
    # NAT64, local-use 64:ff9b:1::/48
    "64:ff9b:1::7f00:1",
    "64:ff9b:1::a9fe:a9fe",
    "64:ff9b:1:7f00:0:100::",  # the /48 embedding of 127.0.0.1: its layout is the operator's, so never guessed
    "64:ff9b:1:ffff::808:808",  # outside the /96 layout: refused whatever it carries
    # 6to4 2002::/16: the IPv4 is bits 16-47
    "2002:7f00:1::",
    "2002:7f00:0001::1",
    "2002:a9fe:a9fe::1",
    "2002:c0a8:101:1::1",
    "2002:a00:1::",
    "2002::1",  # 0.0.0.0
    # Teredo 2001::/32: server IPv4 in bits 32-63, client IPv4 in the last 32 bits XOR 0xffffffff
    "2001:0:7f00:1:8000:63bf:f77d:1cf7",  # server 127.0.0.1, client 8.130.227.8 (public)
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # server 65.54.227.120 (public), client 127.0.0.1
    "2001:0:4136:e378:8000:63bf:5601:5601",  # client 169.254.169.254
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # client 10.0.0.1
    "2001:0:a9fe:a9fe:8000:63bf:f77d:1cf7",  # server 169.254.169.254, client 8.130.227.8
    # ISATAP interface identifiers carry the IPv4 of a tunnel end
    "2606:4700:1:2:0:5efe:7f00:1",
    "2606:4700:1:2:200:5efe:a9fe:a9fe",
]

PUBLIC = [
    "140.82.112.6",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below 100.64/10
    "100.128.0.1",  # just above it
    "172.32.0.1",
    "198.17.255.255",
    "198.20.0.1",
    "192.0.1.1",
    "2606:4700::6810:84e5",
    "2a00:1450:4001:80b::200e",
    "2620:fe::fe",
    # the same forms carrying a public IPv4 are public: a DNS64 resolver answers public hosts this way
    "64:ff9b::808:808",
    "64:ff9b::8.8.8.8",
    "64:ff9b:1::808:808",
    "::ffff:8.8.8.8",
    "::ffff:0:8.8.8.8",
    "::8.8.8.8",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f77d:1cf7",  # Teredo: server 65.54.227.120, client 8.130.227.8
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_a_non_public_address_is_not_public_however_it_is_written(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_address_is_public_however_it_is_written(address: str) -> None:
    assert is_public(address)


def resolve(host: str, answers: list[str] | None = None) -> str:
    """The address the resolver would connect to; `answers` stands in for DNS and must not be asked for a literal."""

    async def lookup(name: str, port: int) -> list[str]:
        if answers is None:
            raise AssertionError(f"{name!r} is an address, not a name: it must never reach DNS")
        return answers

    target = asyncio.run(Resolver(lookup=lookup).resolve(host, 443))
    return target.address


# Host texts as they arrive in a CONNECT line: legacy IPv4 spellings (inet_aton and the WHATWG URL standard
# read them as addresses), brackets, zone ids, a trailing dot.
@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("0x7F.0x0.0x0.0x1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),  # noqa: S104 - an address under test, not a bind
        ("0x0", "0.0.0.0"),  # noqa: S104
        ("2852039166", "169.254.169.254"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("167772161", "10.0.0.1"),
        ("[::1]", "::1"),
        ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%25eth0"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_a_literal_written_any_way_is_read_as_its_address_and_refused(host: str, address: str) -> None:
    with pytest.raises(Blocked) as caught:
        resolve(host)
    assert ipaddress.ip_address(caught.value.address) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "host",
    [
        "256.0.0.1",
        "127.0.0.256",
        "0x100000000",
        "4294967296",
        "1.2.3.4.5",
        "08.0.0.1",  # not octal, not decimal
        "0x7g.1",
        "127..1",
        "::ffff:127.000.000.001",
        "[::1",
        "::1::2",
        "1.2.3.4%eth0",
    ],
)
def test_a_host_that_looks_like_an_address_but_is_not_one_is_never_looked_up(host: str) -> None:
    with pytest.raises(Unresolvable):
        resolve(host)


def test_a_public_literal_in_a_legacy_spelling_is_connected_to_as_its_canonical_address() -> None:
    assert resolve("134744072") == "8.8.8.8"
    assert resolve("0x8.0x8.0x8.0x8") == "8.8.8.8"
    assert resolve("[64:FF9B::808:808]") == "64:ff9b::808:808"


def test_every_address_a_name_resolves_to_is_checked_not_only_the_first() -> None:
    assert resolve("api.example.com", ["140.82.112.6", "2606:4700::6810:84e5"]) == "140.82.112.6"
    for private in ("127.0.0.1", "64:ff9b::a9fe:a9fe", "::ffff:10.0.0.1", "fe80::1%eth0", "2002:7f00:1::"):
        with pytest.raises(Blocked) as caught:
            resolve("api.example.com", ["140.82.112.6", "2606:4700::6810:84e5", private])
        assert caught.value.address == private


def test_a_name_with_no_address_does_not_resolve() -> None:
    with pytest.raises(Unresolvable):
        resolve("api.example.com", [])


def test_an_address_the_resolver_returns_that_is_not_an_address_is_refused() -> None:
    with pytest.raises(Blocked):
        resolve("api.example.com", ["not-an-address"])


def test_a_name_is_looked_up_without_brackets_case_or_a_trailing_dot() -> None:
    asked: list[str] = []

    async def lookup(name: str, port: int) -> list[str]:
        asked.append(name)
        return ["140.82.112.6"]

    asyncio.run(Resolver(lookup=lookup).resolve("API.Example.COM.", 443))
    assert asked == ["api.example.com"]


def test_an_operator_mapping_skips_the_check_and_the_lookup() -> None:
    async def lookup(name: str, port: int) -> list[str]:
        raise AssertionError("a mapped name is never looked up")

    resolver = Resolver({("api.github.com", 443): ("127.0.0.1", 8443)}, lookup=lookup)
    target = asyncio.run(resolver.resolve("API.GitHub.com.", 443))
    assert (target.address, target.port, target.mapped) == ("127.0.0.1", 8443, True)
