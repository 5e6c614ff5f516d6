"""The audit hash chain in the database: rows edited, deleted, reordered or inserted behind the application's back
(raw SQL, as someone with database access would) are named by verification, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django_scopes import scopes_disabled

from audit import chain
from audit.chaining import (
    chain_prune,
    chain_verify,
    checkpoint_latest,
    checkpoint_make,
    checkpoints_make_due,
    retention_apply,
)
from audit.models import AdminEvent, AuditChainHead, AuditCheckpoint, AuditLink, AuditRecord, AuditRetention
from audit.services import audit_ingest, audit_retention_set
from audit.signing import link_key
from audit.tests.factories import attempt, outcome
from conftest import Cast
from tenants import services
from tenants.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(cast: Cast) -> ApiToken:
    return services.session_token_create(membership=cast.bob.membership, name="claude").token


@pytest.fixture
def base(session: ApiToken) -> int:
    """Where the requests' links start: the organization's admin changes (its creation, the session) come first."""
    return AuditChainHead.objects.get(pk=org_of(session)).next_seq


def ingest(records: list[dict[str, Any]]) -> None:
    result = audit_ingest(records=records)
    assert not result.rejected, result.rejected


def history(session: ApiToken, n: int = 6) -> list[str]:
    """N complete requests, one at a time, then one whose outcome never came (closed by a restart)."""
    ids = []
    run = str(uuid.uuid4())
    for i in range(n):
        first = attempt(session, args={"amount": 100 + i, "big": 1e16, "ratio": 0.1 + i}, run=run)
        ingest([first])
        ingest([outcome(session, first["id"], latency_ms=10.0 + i / 3)])
        ids.append(first["id"])
    killed = attempt(session, run=run)
    ingest([killed])
    ingest([{"id": str(uuid.uuid4()), "phase": "restart", "previous_run": run, "run": str(uuid.uuid4()),
             "at": datetime(2030, 1, 2, 5, tzinfo=UTC).isoformat()}])  # fmt: skip
    return [*ids, killed["id"]]


def org_of(session: ApiToken) -> uuid.UUID:
    assert session.organization_id is not None
    return session.organization_id


def sql(statement: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def record_pk(record_id: str) -> Any:
    """The id as the table stores it (SQLite: 32 hex digits; PostgreSQL: uuid)."""
    return uuid.UUID(record_id).hex if connection.vendor == "sqlite" else uuid.UUID(record_id)


def broken(session: ApiToken, **kwargs: Any) -> tuple[str, str, int]:
    result = chain_verify(organization_uuid=org_of(session), **kwargs)
    assert not result.intact and result.broken is not None, "the tampering went unnoticed"
    return result.broken.why, result.broken.record_id, result.broken.seq


def test_an_untouched_history_is_intact_with_every_half_chained(session: ApiToken, base: int) -> None:
    ids = history(session)
    result = chain_verify(organization_uuid=org_of(session))
    assert result.intact, result.as_dict()
    assert result.checked == base + 6 * 2 + 2  # attempts and outcomes, then the killed one's attempt and its closing
    assert list(AuditLink.objects.order_by("seq").values_list("kind", flat=True))[-2:] == ["attempt", "closed"]
    requests = AuditLink.objects.exclude(kind="admin").values_list("record_id", flat=True)
    assert {str(r) for r in requests} == set(ids)


def test_an_edited_row_is_named(session: ApiToken) -> None:
    ids = history(session)
    sql("UPDATE audit_auditrecord SET decision = 'deny' WHERE id = %s", record_pk(ids[2]))
    assert broken(session)[:2] == ("edited", ids[2])


def test_an_edited_outcome_is_named(session: ApiToken) -> None:
    ids = history(session)
    sql("UPDATE audit_auditrecord SET upstream_status = 500 WHERE id = %s", record_pk(ids[4]))
    assert broken(session)[:2] == ("edited", ids[4])


def test_an_edited_argument_is_named(session: ApiToken) -> None:
    ids = history(session)
    sql("UPDATE audit_auditrecord SET args = %s WHERE id = %s", json.dumps({"amount": 1}), record_pk(ids[1]))
    assert broken(session)[:2] == ("edited", ids[1])


def test_a_deleted_row_is_named(session: ApiToken) -> None:
    ids = history(session)
    sql("DELETE FROM audit_auditrecord WHERE id = %s", record_pk(ids[3]))
    assert broken(session)[:2] == ("deleted", ids[3])


def test_a_deleted_row_and_its_links_are_named(session: ApiToken, base: int) -> None:
    ids = history(session)
    sql("DELETE FROM audit_auditrecord WHERE id = %s", record_pk(ids[3]))
    sql("DELETE FROM audit_auditlink WHERE record_id = %s", record_pk(ids[3]))
    why, _, seq = broken(session)
    assert (why, seq) == ("deleted", base + 8)  # the link after the gap


def test_reordered_links_are_named(session: ApiToken, base: int) -> None:
    history(session)
    org = record_pk(str(org_of(session)))
    sql("UPDATE audit_auditlink SET seq = -1 WHERE seq = %s AND organization_uuid = %s", base + 4, org)
    sql("UPDATE audit_auditlink SET seq = %s WHERE seq = %s AND organization_uuid = %s", base + 4, base + 5, org)
    sql("UPDATE audit_auditlink SET seq = %s WHERE seq = -1 AND organization_uuid = %s", base + 5, org)
    why, _, seq = broken(session)
    assert (why, seq) == ("reordered", base + 4)


def test_a_row_put_in_behind_the_chains_back_is_named(session: ApiToken) -> None:
    history(session)
    forged = uuid.uuid4()
    with scopes_disabled():
        original = AuditRecord.objects.filter(organization_uuid=org_of(session)).first()
        assert original is not None
        original.pk = forged
        original.save(force_insert=True)
    assert broken(session)[:2] == ("inserted", str(forged))


def test_an_exported_checkpoint_catches_a_cut_tail_and_a_rebuilt_chain(session: ApiToken, base: int) -> None:
    ids = history(session)
    org = org_of(session)
    exported = checkpoint_make(organization_uuid=org)
    assert exported is not None and exported.seq == base + 13
    assert chain_verify(organization_uuid=org, against=exported).intact
    # Cut the tail: the last request, its links and its checkpoint go, and the head is wound back.
    sql("DELETE FROM audit_auditrecord WHERE id = %s", record_pk(ids[-1]))
    sql("DELETE FROM audit_auditlink WHERE record_id = %s", record_pk(ids[-1]))
    sql("DELETE FROM audit_auditcheckpoint")
    last = AuditLink.objects.filter(organization_uuid=org).order_by("-seq").first()
    assert last is not None
    AuditChainHead.objects.filter(pk=org).update(next_seq=last.seq + 1, hash=last.hash)
    assert chain_verify(organization_uuid=org).intact  # nothing inside says so...
    why, _, seq = broken(session, against=exported)  # ...but the exported checkpoint does
    assert (why, seq) == ("deleted", base + 13)
    # Rebuild the chain to the same length with a record edited: it verifies alone, not against the export.
    sql("UPDATE audit_auditrecord SET decision = 'deny' WHERE id = %s", record_pk(ids[0]))
    _rebuild(org)
    assert chain_verify(organization_uuid=org).intact
    _pad_to(org, base + 13)
    why, _, seq = broken(session, against=exported)
    assert (why, seq) == ("edited", base + 13)


def test_a_stored_checkpoint_with_a_forged_signature_is_named(session: ApiToken) -> None:
    history(session)
    checkpoint_make(organization_uuid=org_of(session))
    AuditCheckpoint.objects.update(signature="AAAA")
    assert broken(session)[0] == "edited"


def test_an_exported_checkpoint_of_another_organization_or_key_is_refused(cast: Cast, session: ApiToken) -> None:
    history(session, n=1)
    exported = checkpoint_make(organization_uuid=org_of(session))
    assert exported is not None
    other = chain.Checkpoint(str(cast.charlie.org.pk), exported.seq, exported.head, exported.at, "", "")
    assert broken(session, against=other)[0] == "edited"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    foreign = chain.checkpoint_sign(exported, Ed25519PrivateKey.generate())
    assert broken(session, against=foreign)[0] == "edited"


def test_periodic_checkpoints_are_made_only_for_chains_that_moved(session: ApiToken, base: int) -> None:
    history(session, n=1)
    assert checkpoints_make_due() == 2  # bob's organization, and charlie's (made, so chained)
    assert checkpoints_make_due() == 0
    ingest([attempt(session)])
    assert checkpoints_make_due() == 1
    latest = checkpoint_latest(organization_uuid=org_of(session))
    assert latest is not None and latest.seq == base + 4


def test_records_and_their_chain_outlive_the_organization(cast: Cast, session: ApiToken) -> None:
    ids = history(session, n=2)
    org = org_of(session)
    services.organization_delete(acting=cast.alice.membership)
    with scopes_disabled():
        kept = AuditRecord.objects.filter(pk__in=ids)
        assert kept.count() == len(ids) and {r.organization_uuid for r in kept} == {org}
    assert chain_verify(organization_uuid=org).intact


def test_chains_are_per_organization(cast: Cast, session: ApiToken) -> None:
    history(session, n=1)
    other = services.session_token_create(membership=cast.charlie.membership, name="codex").token
    start = AuditChainHead.objects.get(pk=org_of(other))
    first = attempt(other)
    ingest([first, outcome(other, first["id"])])
    mine = AuditLink.objects.filter(organization_uuid=org_of(other), seq__gte=start.next_seq).order_by("seq")
    assert list(mine.values_list("seq", "prev")) == [
        (start.next_seq, start.hash),
        (start.next_seq + 1, AuditLink.objects.get(organization_uuid=org_of(other), seq=start.next_seq).hash),
    ]
    sql("UPDATE audit_auditrecord SET decision = 'deny' WHERE id = %s", record_pk(first["id"]))
    assert chain_verify(organization_uuid=org_of(session)).intact
    assert not chain_verify(organization_uuid=org_of(other)).intact


def _rechain(org: uuid.UUID, *, digest_of: Any = None, at_of: Any = None) -> None:
    """What someone with the database AND the link key can do: recompute every link of the chain, from its start,
    with each link's digest and time as DIGEST_OF and AT_OF say (default: as they are)."""
    key = link_key()
    head = AuditChainHead.objects.get(pk=org)
    prev = head.first_prev
    for link in AuditLink.objects.filter(organization_uuid=org).order_by("seq"):
        link.digest = digest_of(link) if digest_of else link.digest
        link.at = at_of(link) if at_of else link.at
        link.prev = prev
        link.hash = chain.link_hash(key=key, prev=prev, seq=link.seq, kind=link.kind, record_id=str(link.record_id),
                                    digest=link.digest, at=chain.stamp(link.at))  # fmt: skip
        link.save()
        prev = link.hash
    AuditChainHead.objects.filter(pk=org).update(hash=prev)


def _rebuild(org: uuid.UUID) -> None:
    """Recompute every link from the rows as they are now (an insider with the key)."""
    from audit.chaining import half_digest

    with scopes_disabled():
        rows = {str(r.pk): r for r in AuditRecord.objects.filter(organization_uuid=org)}
    kinds = {"attempt": "attempt", "outcome": "outcome", "closed": "outcome"}

    def digest_now(link: AuditLink) -> str:  # admin events are left as they were
        return link.digest if link.kind == "admin" else half_digest(rows[str(link.record_id)], kinds[link.kind])

    _rechain(org, digest_of=digest_now)


def _pad_to(org: uuid.UUID, seq: int) -> None:
    """Forge links with the key (over a copied record) until the chain is as long as the exported checkpoint."""
    from audit.chaining import half_digest

    with scopes_disabled():
        template = AuditRecord.objects.filter(organization_uuid=org).first()
        assert template is not None
        head = AuditChainHead.objects.get(pk=org)
        while head.next_seq <= seq:
            template.pk = uuid.uuid4()
            template.save(force_insert=True)
            entry = ("attempt", str(template.pk), half_digest(template, "attempt"))
            now = datetime.now(UTC)
            [link] = chain.chain(link_key(), head.hash, head.next_seq, [entry], at=now)
            AuditLink.objects.create(
                organization_uuid=org, seq=link.seq, kind="attempt", record_id=template.pk, digest=link.digest,
                prev=link.prev, hash=link.hash, at=now,
            )  # fmt: skip
            head.next_seq, head.hash = link.seq + 1, link.hash
            head.save()


def _age(org: uuid.UUID, below_seq: int) -> None:
    """Make the links before BELOW_SEQ as if made in 2020 (their times are hashed: rechained with the key)."""
    old = datetime(2020, 1, 1, tzinfo=UTC)
    _rechain(org, at_of=lambda link: old if link.seq < below_seq else link.at)


def test_moving_a_links_time_without_the_key_is_named(session: ApiToken, base: int) -> None:
    history(session)
    org = org_of(session)
    AuditLink.objects.filter(organization_uuid=org, seq=base + 3).update(at=datetime(2020, 1, 1, tzinfo=UTC))
    why, _, seq = broken(session)
    assert (why, seq) == ("edited", base + 3)  # so `--since` cannot be steered past an edit


def test_a_chain_rebuilt_without_the_key_is_named_at_once(session: ApiToken, base: int) -> None:
    ids = history(session)
    org = org_of(session)
    sql("UPDATE audit_auditrecord SET decision = 'deny' WHERE id = %s", record_pk(ids[0]))
    head = AuditChainHead.objects.get(pk=org)
    prev = head.first_prev
    for link in AuditLink.objects.filter(organization_uuid=org).order_by("seq"):  # sha256 in place of the HMAC
        from audit.chaining import half_digest

        if str(link.record_id) == ids[0] and link.kind == "attempt":
            with scopes_disabled():
                link.digest = half_digest(AuditRecord.objects.get(pk=ids[0]), "attempt")
        link.prev, link.hash = prev, chain.digest({"prev": prev, "digest": link.digest})
        link.save()
        prev = link.hash
    why, _, seq = broken(session)
    assert (why, seq) == ("edited", 0)


def test_pruning_removes_whole_records_from_the_start_and_the_chain_still_verifies(
    session: ApiToken, base: int
) -> None:
    ids = history(session)
    org = org_of(session)
    _age(org, base + 5)  # the admin changes, records 0 and 1 whole, and record 2's attempt but not its outcome
    pruned = chain_prune(organization_uuid=org, before=datetime(2025, 1, 1, tzinfo=UTC))
    assert (pruned.links, pruned.records, pruned.first_seq) == (base + 5, 2, base + 5)
    with scopes_disabled():
        events = list(AdminEvent.objects.filter(organization_uuid=org).values_list("action", flat=True))
        assert events == ["audit.prune"]  # the earlier ones went with their links; the pruning is itself one
        # Record 2 lost its attempt's link but keeps its row: its outcome's link is still in the chain.
        assert set(map(str, AuditRecord.objects.filter(organization_uuid=org).values_list("id", flat=True))) == set(
            ids[2:]
        )
    result = chain_verify(organization_uuid=org)
    assert result.intact, result.as_dict()
    # The 9 links after the cut, record 2's attempt chained again after them, and the pruning's own event.
    assert (result.first_seq, result.checked) == (base + 5, 9 + 1 + 1)
    tail = list(AuditLink.objects.filter(organization_uuid=org).order_by("-seq").values_list("kind", "record_id"))
    assert [(k, str(r)) for k, r in tail[1:2]] == [("attempt", ids[2])]
    assert list(AuditCheckpoint.objects.order_by("id").values_list("reason", "seq")) == [
        ("prune", base + 13),
        ("prune-start", base + 4),
    ]
    ingest([attempt(session)])  # the chain goes on from its head
    assert chain_verify(organization_uuid=org).intact


def test_a_pruned_start_without_its_signed_checkpoint_is_named(session: ApiToken, base: int) -> None:
    history(session)
    org = org_of(session)
    _age(org, base + 6)
    chain_prune(organization_uuid=org, before=datetime(2025, 1, 1, tzinfo=UTC))
    AuditCheckpoint.objects.filter(reason="prune-start").delete()
    why, _, seq = broken(session)
    assert (why, seq) == ("deleted", base + 6)
    # Nor can the start be moved to any other signed checkpoint: only a pruning's own ("prune-start") vouches.
    made = checkpoint_make(organization_uuid=org)
    assert made is not None
    AuditLink.objects.filter(organization_uuid=org, seq__lte=made.seq).delete()
    AuditChainHead.objects.filter(pk=org).update(first_seq=made.seq + 1, first_prev=made.head)
    assert broken(session)[0] == "deleted"


def test_an_exported_checkpoint_before_a_pruning_is_not_checked_and_says_so(session: ApiToken, base: int) -> None:
    history(session)
    org = org_of(session)
    early = checkpoint_make(organization_uuid=org)
    assert early is not None
    ingest([attempt(session)])
    _age(org, early.seq + 2)
    chain_prune(organization_uuid=org, before=datetime(2025, 1, 1, tzinfo=UTC))
    result = chain_verify(organization_uuid=org, against=early)
    assert result.intact and not result.against_checked and "was not checked" in result.note


def test_retention_prunes_only_organizations_that_set_one(cast: Cast, session: ApiToken) -> None:
    history(session, n=2)
    other = services.session_token_create(membership=cast.charlie.membership, name="codex").token
    first = attempt(other)
    ingest([first, outcome(other, first["id"])])
    with scopes_disabled():
        audit_retention_set(acting=cast.alice.membership, days=30)
    _age(org_of(session), 10**9)
    _age(org_of(other), 10**9)
    assert retention_apply() == 3  # both of bob's complete records and the killed one; none of charlie's
    with scopes_disabled():
        assert AuditRecord.objects.filter(organization_uuid=org_of(session)).count() == 0
        assert AuditRecord.objects.filter(organization_uuid=org_of(other)).count() == 1
    assert chain_verify(organization_uuid=org_of(session)).intact
    assert chain_verify(organization_uuid=org_of(other)).intact
    assert retention_apply() == 0


def test_admin_changes_are_links_of_the_same_chain_and_tampering_with_them_is_named(
    cast: Cast, session: ApiToken
) -> None:
    org = org_of(session)
    with scopes_disabled():
        team = services.team_create(acting=cast.alice.membership, name="Red")
    history(session, n=1)
    with scopes_disabled():
        services.team_update(acting=cast.alice.membership, team=team, name="Crimson")
    with scopes_disabled():
        renamed = AdminEvent.objects.get(organization_uuid=org, action="team.update")
        created = AdminEvent.objects.get(organization_uuid=org, action="team.create")
    kinds = list(AuditLink.objects.filter(organization_uuid=org).order_by("seq").values_list("kind", flat=True))
    assert kinds[-6:] == ["admin", "attempt", "outcome", "attempt", "closed", "admin"]  # in the order they happened
    assert chain_verify(organization_uuid=org).intact
    table = AdminEvent._meta.db_table
    sql(f"UPDATE {table} SET actor_email = 'mallory@example.com' WHERE id = %s", record_pk(str(renamed.pk)))  # noqa: S608
    assert broken(session)[:2] == ("edited", str(renamed.pk))
    sql(f"DELETE FROM {table} WHERE id = %s", record_pk(str(created.pk)))  # noqa: S608
    assert broken(session)[:2] == ("deleted", str(created.pk))


def test_a_retention_written_behind_the_services_back_is_not_applied(cast: Cast, session: ApiToken) -> None:
    history(session, n=2)
    with scopes_disabled():
        audit_retention_set(acting=cast.alice.membership, days=3650)
    _age(org_of(session), 10**9)
    AuditRetention.objects.filter(pk=org_of(session)).update(days=1)  # the database alone, no event
    assert retention_apply() == 0
    with scopes_disabled():
        assert AuditRecord.objects.filter(organization_uuid=org_of(session)).count() == 3
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        AuditRetention.objects.filter(pk=org_of(session)).update(days=0)


def test_the_retention_that_a_pruning_applied_outlives_it(cast: Cast, session: ApiToken) -> None:
    with scopes_disabled():
        audit_retention_set(acting=cast.alice.membership, days=30)
    history(session, n=1)
    _age(org_of(session), 10**9)  # everything, the retention's own event included, is older than 30 days
    assert retention_apply() == 2  # the complete request and the killed one
    assert chain_verify(organization_uuid=org_of(session)).intact
    _age(org_of(session), 10**9)
    history(session, n=1)
    _age(org_of(session), 10**9)
    assert retention_apply() == 2  # the setting is still vouched for by its event, chained again after the cut
    assert chain_verify(organization_uuid=org_of(session)).intact


def test_a_forged_half_after_a_pruning_is_named(session: ApiToken, base: int) -> None:
    ids = history(session)
    org = org_of(session)
    _age(org, base + 5)
    chain_prune(organization_uuid=org, before=datetime(2025, 1, 1, tzinfo=UTC))
    sql("UPDATE audit_auditrecord SET decision = 'deny' WHERE id = %s", record_pk(ids[2]))  # the carried attempt
    assert broken(session)[:2] == ("edited", ids[2])
    sql("UPDATE audit_auditrecord SET decision = 'allow' WHERE id = %s", record_pk(ids[2]))
    first = attempt(session)
    ingest([first])  # a pending attempt: a forged outcome written onto it is named
    sql("UPDATE audit_auditrecord SET has_outcome = %s, outcome = 'completed', upstream_status = 200 WHERE id = %s",
        True, record_pk(first["id"]))  # fmt: skip
    assert broken(session)[:2] == ("inserted", first["id"])
