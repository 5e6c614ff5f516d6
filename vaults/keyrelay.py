"""The key-channel relay: a CLI on another machine reaches the data plane's key channel through the control plane.

On one machine the CLI speaks to the credential service's unix socket (dataplane.keychannel). Across machines
it posts the same requests here instead; the data plane pulls them with its service token, answers them with
the same code that serves the socket, and the answer goes back to the waiting CLI. What crosses the control
plane is what the socket carries: attestation reports (public), and master keys only HPKE-sealed to the key an
attestation report names, which the control plane cannot open. (With v4's software attestation provider a
control plane that lies could hand the CLI a report for a key of its own; a hardware provider's report is
signed by the CPU and cannot be made up. dataplane.attestation says what each proves.)

A person relays only for themself: `open` names a live session of theirs in this organization by its id (never by
its token, which stays on the CLI's machine: the sealed master key is bound to the token's non-secret lookup part);
`status` and `close` one of their own sessions; `attest` a nonce. The operations that use a session's unlocked keys on
the control plane's behalf (rotate, confirm) are the worker's, not relayed. Rows are short-lived: the request
is cleared when the data plane claims it, the row deleted when its answer is taken or nobody waits any more.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from aileron_site.problems import InvalidInput, NotFound, Problem
from tenants.models import ApiToken, Membership, TokenKind, User
from vaults.models import KeyChannelMessage

RELAYED_OPS = ("attest", "open", "status", "close")
NONCE_BYTES = 32  # dataplane.attestation.NONCE_BYTES (the control plane does not import the data plane)
MAX_SEALED_BYTES = 1024
MAX_OUTSTANDING_PER_USER = 8
MAX_OUTSTANDING_PER_ORGANIZATION = 32
LIFETIME = timedelta(minutes=2)  # far beyond any wait: a row older than this was abandoned


class TooManyRequests(Problem):
    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


def _b64(body: dict[str, Any], field: str, *, exact: int | None = None, most: int | None = None) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be base64 text.")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidInput(f"{field} is not base64.") from None
    if exact is not None and len(raw) != exact:
        raise InvalidInput(f"{field} must be {exact} bytes.")
    if most is not None and not 0 < len(raw) <= most:
        raise InvalidInput(f"{field} must be 1 to {most} bytes.")
    return value


def _own_session(*, membership: Membership, session_id: Any, live: bool = False) -> str:
    try:
        parsed = uuid.UUID(str(session_id))
    except ValueError:
        raise InvalidInput("session_id must be a session's id.") from None
    mine = ApiToken.objects.filter(
        pk=parsed, kind=TokenKind.SESSION, user_id=membership.user_id, organization_id=membership.organization_id
    )
    if live:
        mine = mine.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())
    if not mine.exists():
        raise NotFound("No such session of yours." if not live else "No live session of yours has that id.")
    return str(parsed)


def keyrelay_request_clean(*, membership: Membership, op: str, body: dict[str, Any]) -> dict[str, Any]:
    """The request the data plane gets: only the fields its operation reads, each checked; else a problem."""
    if op == "attest":
        return {"nonce": _b64(body, "nonce", exact=NONCE_BYTES)}
    if op == "open":
        if "session_token" in body:
            # The token is a live credential: it must never sit in this database (nor its WAL, nor a backup).
            raise InvalidInput("Name the session by session_id: a session token is never relayed.")
        session_id = _own_session(membership=membership, session_id=body.get("session_id"), live=True)
        return {
            "session_id": session_id,
            "nonce": _b64(body, "nonce", exact=NONCE_BYTES),
            "sealed_master_key": _b64(body, "sealed_master_key", most=MAX_SEALED_BYTES),
        }
    if op in ("status", "close"):
        return {"session_id": _own_session(membership=membership, session_id=body.get("session_id"))}
    raise InvalidInput(f"op must be one of {', '.join(RELAYED_OPS)}.")


def keyrelay_post(*, membership: Membership, op: str, body: dict[str, Any]) -> KeyChannelMessage:
    """Queue one request for the data plane (after checking it); the caller then waits for its answer."""
    request = keyrelay_request_clean(membership=membership, op=op, body=body)
    with transaction.atomic():
        # Counted under a lock of the person's row: concurrent posts (PostgreSQL's READ COMMITTED) wait in line.
        User.objects.select_for_update().filter(pk=membership.user_id).first()
        waiting = KeyChannelMessage.objects.filter(answered_at__isnull=True, created_at__gt=timezone.now() - LIFETIME)
        outstanding = waiting.filter(user_id=membership.user_id).count()
        if outstanding >= MAX_OUTSTANDING_PER_USER:
            raise TooManyRequests(f"{outstanding} of your key-channel requests are still waiting; try again shortly.")
        if waiting.filter(organization_id=membership.organization_id).count() >= MAX_OUTSTANDING_PER_ORGANIZATION:
            raise TooManyRequests("Your organization's key-channel requests are queueing; try again shortly.")
        return KeyChannelMessage.objects.create(
            organization_id=membership.organization_id, user_id=membership.user_id, op=op, body=request
        )


def keyrelay_claim(*, limit: int = 16, now: datetime | None = None) -> list[KeyChannelMessage]:
    """The data plane takes waiting requests, oldest first; each is handed out once, and its request is cleared
    from the database as it is (the returned objects still carry it)."""
    now = now or timezone.now()
    claimed = []
    waiting = KeyChannelMessage.objects.filter(claimed_at__isnull=True, created_at__gt=now - LIFETIME)
    for message in waiting.order_by("created_at")[:limit]:
        # A conditional update claims it: two data planes (or two polls) never both get one request.
        if KeyChannelMessage.objects.filter(pk=message.pk, claimed_at__isnull=True).update(claimed_at=now, body={}):
            claimed.append(message)
    return claimed


def keyrelay_answer(*, message_id: uuid.UUID, answer: dict[str, Any]) -> bool:
    """Record the data plane's answer to a request it claimed; False if nobody waits for it any more."""
    found = KeyChannelMessage.objects.filter(pk=message_id, claimed_at__isnull=False, answered_at__isnull=True)
    return bool(found.update(answer=answer, answered_at=timezone.now()))


def keyrelay_take(*, message_id: uuid.UUID) -> dict[str, Any] | None:
    """The answer, once there (and the row is gone then); None while the data plane has not answered."""
    with transaction.atomic():
        message = KeyChannelMessage.objects.filter(pk=message_id, answered_at__isnull=False).first()
        if message is None:
            return None
        message.delete()
    return dict(message.answer or {})


def keyrelay_forget(*, message_id: uuid.UUID) -> None:
    """The CLI stopped waiting: drop the request, answered or not."""
    KeyChannelMessage.objects.filter(pk=message_id).delete()


def keyrelay_sweep(*, now: datetime | None = None) -> int:
    """Delete requests nobody waits for any more (a server that restarted mid-wait leaves them)."""
    deleted, _ = KeyChannelMessage.objects.filter(created_at__lte=(now or timezone.now()) - LIFETIME).delete()
    return deleted
