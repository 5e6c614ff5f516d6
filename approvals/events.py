"""Approval events, pushed over the channel layer after the change commits.

Groups: `approvals.org.<org>` (everyone who may decide in the organization), `approvals.user.<user>` (the
requester, to watch their own requests) and `approval.<id>` (the data plane's wait for that one approval).

The channel layer is Redis in the split topology and in-memory on the embedded default. In-memory reaches only
the API process itself, so a process that is not the API server (the Celery worker expiring approvals) relays
events through the API: set AILERON_EVENT_RELAY_URL (the API's base URL) and AILERON_EVENT_RELAY_TOKEN_FILE (a
service token), as `aileron service` does for its worker on the embedded default. The relay sends ids only;
the API reads the approvals itself before pushing them.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING, Any

import httpx
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

if TYPE_CHECKING:
    from approvals.models import Approval

log = logging.getLogger("aileron.approvals")

EVENT_TYPE = "approval.event"  # the consumers' handler: approval_event()
KINDS = ("created", "voted", "decided", "used", "completed", "expired", "cancelled")
NOTIFIED = ("created", "decided", "expired", "cancelled")  # approvals.models.NOTIFY_EVENTS


def org_group(organization_id: uuid.UUID | str) -> str:
    return f"approvals.org.{organization_id}"


def user_group(user_id: uuid.UUID | str) -> str:
    return f"approvals.user.{user_id}"


def approval_group(approval_id: uuid.UUID | str) -> str:
    return f"approval.{approval_id}"


def payload(approval: Approval, kind: str) -> dict[str, Any]:
    from approvals.api.serializers import ApprovalSerializer

    return {"type": EVENT_TYPE, "event": kind, "approval": dict(ApprovalSerializer(approval).data)}


def publish(approval: Approval, kind: str) -> None:
    """Push `kind` for this approval once the current transaction commits (at once outside one), and queue its
    notifications (approvals.notifications) then too."""
    publish_after(approval.pk, kind)


def publish_after(approval_id: uuid.UUID, kind: str) -> None:
    """publish() for an approval known by id only."""
    assert kind in KINDS  # noqa: S101
    transaction.on_commit(lambda: _send(approval_id, kind))
    if kind in NOTIFIED:
        transaction.on_commit(lambda: _notify(approval_id, kind))


def _notify(approval_id: uuid.UUID, kind: str) -> None:
    from approvals.notifications import notifications_enqueue

    try:
        notifications_enqueue(approval_id=approval_id, event=kind)
    except Exception:  # noqa: BLE001 - a notification that fails must not undo a decision that committed
        log.exception("could not queue the notifications of %s for %s", kind, approval_id)


def _send(approval_id: uuid.UUID, kind: str) -> None:
    relay = os.environ.get("AILERON_EVENT_RELAY_URL")
    if relay:
        _relay(relay, approval_id, kind)
        return
    publish_now(approval_id, kind)


def publish_now(approval_id: uuid.UUID, kind: str) -> None:
    """Push `kind` to the approval's groups (in this process's channel layer): first a bare wake-up to the data
    plane's wait (it reads the state itself), then, read and serialized, to the people watching."""
    from django_scopes import scopes_disabled

    from approvals.models import Approval

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        # A grant releases a held request before anything is read or serialized for people's screens.
        async_to_sync(layer.group_send)(
            approval_group(approval_id), {"type": EVENT_TYPE, "event": kind, "approval": {"id": str(approval_id)}}
        )
        with scopes_disabled():
            approval = Approval.objects.filter(pk=approval_id).prefetch_related("decisions").first()
            if approval is None:
                return
            message = payload(approval, kind)
        groups = [org_group(approval.organization_id)]
        if approval.requester_id is not None:
            groups.append(user_group(approval.requester_id))
        for group in groups:
            async_to_sync(layer.group_send)(group, message)
    except Exception:  # noqa: BLE001 - a push that fails must not undo a decision that committed
        log.exception("could not push approval event %s for %s", kind, approval_id)


def _relay(base_url: str, approval_id: uuid.UUID, kind: str) -> None:
    token_file = os.environ.get("AILERON_EVENT_RELAY_TOKEN_FILE", "")
    try:
        with open(token_file, encoding="ascii") as handle:
            token = handle.read().strip()
        response = httpx.post(
            base_url.rstrip("/") + "/api/v1/dataplane/approvals/events/",
            json={"approvals": [str(approval_id)], "event": kind},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5.0,
        )
        response.raise_for_status()
    except (OSError, httpx.HTTPError) as exc:
        # The state change is committed; only the push is lost (pages and `watch` re-read on reconnect).
        log.warning("could not relay approval event %s for %s to the API: %s", kind, approval_id, exc)
