"""The hash chain's pure logic: every kind of tampering is named at the first record it touches."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import (
    Checkpoint,
    Link,
    canonical,
    chain,
    checkpoint_sign,
    checkpoint_valid,
    digest,
    genesis,
    link_hash,
    verify_links,
)

IDS = [str(uuid.UUID(int=i + 1)) for i in range(10)]
KEY = b"k" * 32
GENESIS = genesis(str(uuid.UUID(int=99)))
AT = datetime(2026, 12, 6, 12, tzinfo=UTC)


def contents() -> dict[tuple[str, str], dict[str, object]]:
    return {("attempt", rid): {"action": f"github.action-{i}", "n": i} for i, rid in enumerate(IDS)}


def built() -> tuple[list[Link], dict[tuple[str, str], str | None]]:
    rows = contents()
    links = chain(KEY, GENESIS, 0, [(kind, rid, digest(body)) for (kind, rid), body in rows.items()], at=AT)
    return links, {key: digest(body) for key, body in rows.items()}


def renumbered(links: list[Link], start: int) -> list[Link]:
    return [dataclasses.replace(link, seq=start + i) for i, link in enumerate(links)]


def test_an_untouched_chain_verifies() -> None:
    links, current = built()
    assert [link.seq for link in links] == list(range(10))
    assert all(link.consistent(KEY) for link in links)
    assert not any(link.consistent(b"another key") for link in links)
    assert verify_links(links, key=KEY, start_prev=GENESIS, start_seq=0, current=current) is None


def test_canonical_form_is_stable_across_key_order_timezones_and_id_types() -> None:
    at = datetime(2026, 12, 6, 12, 0, 0, 5, tzinfo=UTC)
    same = at.astimezone(timezone(timedelta(hours=5)))
    rid = uuid.uuid4()
    assert canonical({"b": 1, "a": at, "id": rid}) == canonical({"id": str(rid), "a": same, "b": 1})
    assert canonical({"a": at}) == b'{"a":"2026-12-06T12:00:00.000005Z"}'
    with pytest.raises(ValueError, match="timezone-aware"):
        canonical({"a": datetime(2026, 1, 1)})  # noqa: DTZ001 - the point of the test


def test_an_edited_record_is_named() -> None:
    links, current = built()
    current[("attempt", IDS[4])] = digest({"action": "github.something-else", "n": 4})
    found = verify_links(links, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.record_id, found.why) == (4, IDS[4], "edited")


def test_a_deleted_record_row_is_named() -> None:
    links, current = built()
    current[("attempt", IDS[6])] = None
    found = verify_links(links, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.why) == (6, "deleted")


def test_a_deleted_link_is_named_whether_or_not_the_rest_were_renumbered() -> None:
    links, current = built()
    gap = links[:3] + links[4:]
    found = verify_links(gap, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.why) == (4, "deleted")
    closed = links[:3] + renumbered(links[4:], 3)
    found = verify_links(closed, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.why) == (3, "deleted")


def test_two_swapped_links_are_named_as_reordered() -> None:
    links, current = built()
    swapped = links[:5] + [dataclasses.replace(links[6], seq=5), dataclasses.replace(links[5], seq=6)] + links[7:]
    found = verify_links(swapped, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.record_id, found.why) == (5, IDS[6], "reordered")
    # Swapping the records the links point to (rather than the links) is an edit of each.
    links, current = built()
    first, second = ("attempt", IDS[2]), ("attempt", IDS[3])
    current[first], current[second] = current[second], current[first]
    found = verify_links(links, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.why) == (2, "edited")


def test_an_inserted_link_is_named_at_its_place() -> None:
    links, current = built()
    fake_id = str(uuid.uuid4())
    current[("attempt", fake_id)] = digest({"action": "forged"})
    [fake] = chain(KEY, links[3].hash, 4, [("attempt", fake_id, current[("attempt", fake_id)] or "")], at=AT)
    shifted = links[:4] + [fake] + renumbered(links[4:], 5)
    found = verify_links(shifted, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.record_id, found.why) == (4, fake_id, "inserted")
    # Or squeezed in under a seq already taken:
    doubled = links[:5] + [dataclasses.replace(fake, seq=4)] + links[5:]
    found = verify_links(doubled, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.why) == (4, "inserted")


def test_a_link_edited_in_place_is_named() -> None:
    links, current = built()
    other = digest({"action": "rewritten"})
    current[("attempt", IDS[7])] = other
    edited = links[:7] + [dataclasses.replace(links[7], digest=other)] + links[8:]
    found = verify_links(edited, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.why) == (7, "edited")


def test_a_chain_rebuilt_after_a_deletion_passes_alone_but_misses_a_signed_checkpoint() -> None:
    links, current = built()
    key = Ed25519PrivateKey.generate()
    org = str(uuid.uuid4())
    at = datetime(2026, 12, 6, tzinfo=UTC)
    exported = checkpoint_sign(Checkpoint(org, links[-1].seq, links[-1].hash, at, ""), key)
    del current[("attempt", IDS[2])]
    kept = [(link.kind, link.record_id, link.digest) for link in links if link.record_id != IDS[2]]
    rebuilt = chain(KEY, GENESIS, 0, kept, at=AT)
    assert verify_links(rebuilt, key=KEY, start_prev=GENESIS, start_seq=0, current=current) is None
    assert checkpoint_valid(exported, key.public_key())
    assert rebuilt[-1].seq < exported.seq and rebuilt[-1].hash != exported.head  # what the caller compares


def test_checkpoints_are_signed_and_a_changed_one_fails() -> None:
    key = Ed25519PrivateKey.generate()
    at = datetime(2026, 12, 6, 10, tzinfo=UTC)
    signed = checkpoint_sign(Checkpoint(str(uuid.uuid4()), 9, "ab" * 32, at, ""), key)
    assert checkpoint_valid(signed, key.public_key())
    assert Checkpoint.from_dict(signed.as_dict()) == signed
    assert not checkpoint_valid(dataclasses.replace(signed, seq=8), key.public_key())
    assert not checkpoint_valid(dataclasses.replace(signed, head="cd" * 32), key.public_key())
    assert not checkpoint_valid(signed, Ed25519PrivateKey.generate().public_key())
    assert not checkpoint_valid(dataclasses.replace(signed, signature="not base64!"), key.public_key())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "needs"),
        ({"organization": "x", "seq": 1, "head": "h", "at": "2026-01-01T00:00:00Z", "key_id": "k",
          "signature": ""}, "not a checkpoint"),
        ({"organization": str(uuid.uuid4()), "seq": -1, "head": "h", "at": "2026-01-01T00:00:00Z", "key_id": "k",
          "signature": ""}, "non-negative"),
        ({"organization": str(uuid.uuid4()), "seq": 1, "head": "h", "at": "2026-01-01T00:00:00", "key_id": "k",
          "signature": ""}, "timezone"),
    ],
)  # fmt: skip
def test_a_bad_exported_checkpoint_is_a_value_error(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Checkpoint.from_dict(data)


def test_link_hash_covers_every_field_and_the_key() -> None:
    base: dict[str, Any] = {
        "key": KEY, "prev": GENESIS, "seq": 1, "kind": "attempt", "record_id": IDS[0], "digest": "d", "at": "t",
    }  # fmt: skip
    value = link_hash(**base)
    for name, other in [("key", b"x" * 32), ("prev", "1" * 64), ("seq", 2), ("kind", "outcome"),
                        ("record_id", IDS[1]), ("digest", "e"), ("at", "u")]:  # fmt: skip
        assert link_hash(**{**base, name: other}) != value


def test_each_organization_starts_from_its_own_genesis() -> None:
    assert genesis(str(uuid.UUID(int=1))) != genesis(str(uuid.UUID(int=2)))
    links, current = built()
    found = verify_links(links, key=KEY, start_prev=genesis(str(uuid.UUID(int=1))), start_seq=0, current=current)
    assert found is not None and found.seq == 0


def test_a_chain_forged_without_the_key_is_named_at_its_first_link() -> None:
    links, current = built()
    forged = chain(b"guessed key", GENESIS, 0, [(link.kind, link.record_id, link.digest) for link in links], at=AT)
    found = verify_links(forged, key=KEY, start_prev=GENESIS, start_seq=0, current=current)
    assert found is not None and (found.seq, found.why) == (0, "edited")
