"""The proxy's pure parts: proxy auth, authorities, audited arguments, address guard, session CAs, audit spool."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from dataplane import session_ca
from dataplane.audit_records import redact_args
from dataplane.destination import split_authority
from dataplane.guard import Blocked, ResolveError, Resolver, is_public, parse_resolve_map
from dataplane.sessions import proxy_token
from dataplane.spool import AuditSpool, SpoolError

SECRET = b"ghp_the-real-credential-0123456789"


def test_the_session_token_comes_from_basic_or_bearer_proxy_auth() -> None:
    token = "ail_ses_abcdefabcdef" + "x" * 32
    basic = base64.b64encode(f"aileron:{token}".encode()).decode()
    assert proxy_token(f"Basic {basic}") == token
    assert proxy_token(f"Bearer {token}") == token
    assert proxy_token("Basic !!!") is None
    assert proxy_token("Basic " + base64.b64encode(b"aileron:ail_pat_x").decode()) is None  # not a session token
    assert proxy_token("") is None


def test_authorities_split_into_host_and_port() -> None:
    assert split_authority("API.GitHub.com.", default_port=443) == ("api.github.com", 443)
    assert split_authority("api.github.com:8443", default_port=443) == ("api.github.com", 8443)
    assert split_authority("[::1]:8443", default_port=443) == ("::1", 8443)
    assert split_authority("evil:notaport", default_port=443) == ("evil:notaport", 443)


def test_audited_arguments_redact_sensitive_ones_and_stay_small() -> None:
    args = {"messages": [{"content": "secret plans"}], "model": "m", "title": "t" * 1000}
    out = redact_args(args, ("messages",))
    assert out["messages"] == "[redacted]" and out["model"] == "m"
    assert len(out["title"]) < 300
    huge = redact_args({f"k{i}": "v" * 200 for i in range(100)}, ())
    assert huge["_truncated"] is True


def test_the_resolve_map_parses_and_rejects_bad_entries() -> None:
    assert parse_resolve_map("api.github.com:443=127.0.0.1:8443, x.test:443=[::1]:9") == {
        ("api.github.com", 443): ("127.0.0.1", 8443),
        ("x.test", 443): ("::1", 9),
    }
    for bad in ("api.github.com=127.0.0.1:1", "a:443=notanip:1", "a:99999=1.2.3.4:1"):
        with pytest.raises(ResolveError):
            parse_resolve_map(bad)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


def test_public_addresses_are_public() -> None:
    assert is_public("140.82.112.6") and is_public("2606:4700::6810:84e5")


def test_the_resolver_refuses_private_answers_but_honours_operator_mappings() -> None:
    resolver = Resolver({("api.github.com", 443): ("127.0.0.1", 8443)})
    mapped = asyncio.run(resolver.resolve("API.GitHub.com", 443))
    assert (mapped.address, mapped.port, mapped.mapped) == ("127.0.0.1", 8443, True)
    with pytest.raises(Blocked):
        asyncio.run(resolver.resolve("localhost", 443))
    with pytest.raises(Blocked):
        asyncio.run(resolver.resolve("169.254.169.254", 80))


def test_a_session_ca_is_the_same_key_for_every_worker_and_differs_per_session(tmp_path: Path) -> None:
    seed = session_ca.seed_load_or_create(tmp_path / "seed")
    assert session_ca.seed_load_or_create(tmp_path / "seed") == seed
    assert (tmp_path / "seed").stat().st_mode & 0o777 == 0o600
    expires = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    key_a, cert_a = session_ca.session_ca(seed, session_id="a", expires_at=expires)
    key_a2, cert_a2 = session_ca.session_ca(seed, session_id="a", expires_at=expires)
    key_b, _ = session_ca.session_ca(seed, session_id="b", expires_at=expires)
    assert isinstance(key_a, ec.EllipticCurvePrivateKey)
    assert key_a.private_numbers() == key_a2.private_numbers()
    assert key_a.private_numbers() != key_b.private_numbers()
    assert cert_a.serial_number == cert_a2.serial_number
    assert cert_a.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert_a.not_valid_after_utc == expires + datetime.timedelta(hours=1)


def test_a_seed_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seed"
    session_ca.seed_load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(session_ca.SeedError):
        session_ca.seed_load_or_create(path)


class FlakyControlPlane:
    def __init__(self) -> None:
        self.up = False
        self.received: list[dict[str, Any]] = []
        self.calls = 0

    def ship(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if not self.up:
            raise ConnectionError("control plane down")
        self.received.extend(records)
        return {"accepted": len(records), "rejected": []}


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_the_spool_keeps_records_while_the_control_plane_is_down_and_ships_them_in_order(tmp_path: Path) -> None:
    control = FlakyControlPlane()
    spool = AuditSpool(tmp_path / "spool", control.ship, segment_bytes=2048)

    async def write() -> None:
        for i in range(50):
            await spool.record_durable({"id": str(i), "phase": "attempt"})
            spool.record({"id": str(i), "phase": "outcome"})

    spool.start()
    asyncio.run(write())
    wait_for(lambda: control.calls >= 2)
    assert control.received == []
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) > 1  # rotated into segments
    control.up = True
    wait_for(lambda: len(control.received) == 100)
    assert [(r["id"], r["phase"]) for r in control.received[:3]] == [
        ("0", "attempt"),
        ("0", "outcome"),
        ("1", "attempt"),
    ]
    spool.stop()
    assert spool.pending_bytes() == 0
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1  # shipped segments are deleted


def test_a_damaged_spool_line_is_dropped_and_the_rest_still_shipped(tmp_path: Path) -> None:
    from dataplane.control import BadRequestError

    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "000000000001.jsonl").write_bytes(b'{"id": "a"}\n{"id": "b", "torn\n{"id": "c"}\n')
    shipped: list[dict[str, Any]] = []

    def ship_lines(lines: list[bytes]) -> dict[str, Any]:
        json.loads(b'{"records":[' + b",".join(lines) + b"]}")  # what the control plane would do
        raise AssertionError("unreachable with a damaged line")

    def strict(lines: list[bytes]) -> dict[str, Any]:
        try:
            return ship_lines(lines)
        except ValueError:
            raise BadRequestError("malformed") from None

    def ship(records: list[dict[str, Any]]) -> dict[str, Any]:
        shipped.extend(records)
        return {"accepted": len(records), "rejected": []}

    spool = AuditSpool(folder, ship, ship_lines=strict)
    spool.start()
    wait_for(lambda: [r["id"] for r in shipped] == ["a", "c"])
    spool.stop()


def test_records_survive_a_restart_and_are_shipped_by_the_next_process(tmp_path: Path) -> None:
    down = FlakyControlPlane()
    first = AuditSpool(tmp_path / "spool", down.ship)
    first.start()
    asyncio.run(first.record_durable({"id": "kept", "phase": "attempt"}))
    first.stop(ship_timeout=0.2)
    up = FlakyControlPlane()
    up.up = True
    second = AuditSpool(tmp_path / "spool", up.ship)
    second.start()
    wait_for(lambda: [r["id"] for r in up.received if r["phase"] != "restart"] == ["kept"])
    second.stop()


def test_a_record_that_cannot_be_written_raises_so_nothing_is_injected(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "spool", FlakyControlPlane().ship)
    spool.start()
    import os

    os.close(spool._fd)  # the disk is gone
    spool._fd = os.open(os.devnull, os.O_RDONLY)
    with pytest.raises(SpoolError):
        asyncio.run(spool.record_durable({"id": "x"}))
    spool.stop(ship_timeout=0.1)


def test_concurrent_durable_records_share_syncs(tmp_path: Path) -> None:
    control = FlakyControlPlane()
    control.up = True
    spool = AuditSpool(tmp_path / "spool", control.ship)
    spool.start()
    syncs = []
    import os

    real = os.fdatasync

    def counting(fd: int) -> None:
        syncs.append(threading.get_ident())
        real(fd)

    os.fdatasync = counting  # type: ignore[assignment]
    try:

        async def burst() -> None:
            await asyncio.gather(*(spool.record_durable({"id": str(i)}) for i in range(200)))

        asyncio.run(burst())
    finally:
        os.fdatasync = real
    assert 1 <= len(syncs) < 200
    wait_for(lambda: len(control.received) == 200)
    spool.stop()
    assert json.loads(json.dumps(control.received[0]))["id"] == "0"


def test_records_nobody_waits_for_are_written_at_once_but_synced_at_most_once_a_second(tmp_path: Path) -> None:
    import os

    control = FlakyControlPlane()
    control.up = True
    spool = AuditSpool(tmp_path / "spool", control.ship)
    spool.start()
    spool.record({"id": "first"})
    wait_for(lambda: len(control.received) == 1)
    syncs: list[int] = []
    real = os.fdatasync

    def counting(fd: Any) -> None:
        syncs.append(fd)

    os.fdatasync = counting
    try:
        for i in range(20):
            spool.record({"id": f"outcome-{i}"})
            time.sleep(0.005)
        wait_for(lambda: len(control.received) == 21)
        assert syncs == []  # within a second of the last sync: written, not yet synced
        asyncio.run(spool.record_durable({"id": "attempt"}))
        assert len(syncs) == 1  # an attempt syncs everything before it too
    finally:
        os.fdatasync = real
    spool.stop()


def test_every_record_the_spool_writes_passes_its_scrub_and_one_that_fails_it_keeps_no_text(tmp_path: Path) -> None:
    from dataplane import exfil
    from dataplane.credscan import MARK, Matcher

    secret = b"canary-spool-0123456789abcdef"
    matcher = Matcher([secret])
    spool = AuditSpool(tmp_path / "spool", FlakyControlPlane().ship)
    spool.scrub = lambda record: exfil.scrub_record(matcher, record)
    spool.start()
    asyncio.run(
        spool.record_durable(
            {
                "id": "a",
                "phase": "outcome",
                "error": "Bad HTTP response line: b'HTTP/1.1 2x0 " + secret.decode() + "'",
                "args": {"q": [secret.hex()], secret.decode(): 1},
                "reason": "%63" + secret.decode()[1:],  # escaped in part: still the credential, read decoded
            }
        )
    )

    def broken(record: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(secret.decode())

    spool.scrub = broken
    asyncio.run(spool.record_durable({"id": "b", "phase": "outcome", "error": secret.decode(), "upstream_status": 200}))
    spool.stop(ship_timeout=0.1)
    written = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("*.jsonl"))
    assert matcher.first(written) is None and secret not in written
    first, second = (json.loads(line) for line in written.splitlines() if b'"id":"a"' in line or b'"id":"b"' in line)
    assert first["error"].endswith(MARK.decode() + "'") and first["reason"] == MARK.decode()
    assert second["upstream_status"] == 200 and "dropped" in second["error"]
