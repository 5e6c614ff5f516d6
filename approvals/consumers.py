"""The approvals websocket: a snapshot of what is pending, then every change, for one organization.

Authentication is done by approvals.middleware; this consumer authorizes in connect(): the caller must be a
member of the organization. Approvers and auditors watch the organization's group; other members watch their
own requests only. Refusals are accepted and then closed with a 44xx code, because a handshake refused before
accept reaches a browser only as an anonymous 1006 and the page could not tell "sign in again" from "retry".
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone
from django_scopes import scope as tenant_scope

from aileron_site.problems import NotFound
from approvals import events, selectors
from approvals.api.serializers import ApprovalSerializer
from approvals.middleware import SUBPROTOCOL, Refusal
from approvals.models import ApprovalState
from tenants.models import ApiToken, Membership, User
from tenants.selectors import organization_get_for_user

SNAPSHOT_MAX = 200


class CloseCode(IntEnum):
    UNAUTHENTICATED = 4401  # no token, or a dead one: sign in again
    NOT_A_PERSON = 4403  # an agent's session token or the data plane's service token
    NOT_FOUND = 4404  # no such organization, or not a member of it (the same answer for both)


@dataclass(frozen=True, slots=True)
class Watch:
    """What one socket may see, decided once at connect."""

    user_id: uuid.UUID
    organization_id: uuid.UUID
    sees_all: bool

    @property
    def groups(self) -> list[str]:
        if self.sees_all:
            return [events.org_group(self.organization_id)]
        return [events.user_group(self.user_id)]

    def may_see(self, approval: dict[str, Any]) -> bool:
        # The user group carries the person's requests in every organization: only this one's may pass.
        if str(approval.get("organization_id")) != str(self.organization_id):
            return False
        return self.sees_all or str(approval.get("requester_id")) == str(self.user_id)


def _membership(user: User, organization_id: uuid.UUID) -> Membership | None:
    try:
        return organization_get_for_user(user=user, organization_id=organization_id)
    except NotFound:
        return None


def _snapshot(membership: Membership) -> list[dict[str, Any]]:
    """The pending approvals this member may see, newest first (a reconnecting page resyncs from it)."""
    with tenant_scope(organization=membership.organization):
        pending = (
            selectors.approval_list(membership=membership)
            .filter(state=ApprovalState.PENDING, expires_at__gt=timezone.now())
            .order_by("-created_at", "-id")[:SNAPSHOT_MAX]
        )
        return [dict(item) for item in ApprovalSerializer(pending, many=True).data]


def _still_allowed(watch: Watch, token_id: uuid.UUID | None) -> CloseCode | None:
    """Re-checked before each event: a revoked token or a removed member stops receiving at once."""
    if token_id is None:
        return CloseCode.UNAUTHENTICATED
    live = ApiToken.objects.filter(
        pk=token_id, revoked_at__isnull=True, expires_at__gt=timezone.now(), user__is_active=True
    ).exists()
    if not live:
        return CloseCode.UNAUTHENTICATED
    user = User.objects.get(pk=watch.user_id)
    if _membership(user, watch.organization_id) is None:
        return CloseCode.NOT_FOUND
    return None


RECHECK_SECONDS = 5.0  # how long a positive token/membership check is trusted before the next event re-checks


class ApprovalsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """/ws/orgs/<org_id>/approvals/ — sends {"event": "snapshot", "approvals": [...]}, then
    {"event": <created|voted|decided|used|completed|expired|cancelled>, "approval": {...}}."""

    watch: Watch | None = None
    checked_at = float("-inf")

    def _subprotocol(self) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in self.scope.get("subprotocols", []) else None

    async def _refuse(self, code: CloseCode) -> None:
        await self.accept(self._subprotocol())
        await self.close(code=int(code))

    async def connect(self) -> None:
        user: User | None = self.scope.get("user")
        if user is None:
            refusal = self.scope.get("auth_refusal")
            await self._refuse(CloseCode.NOT_A_PERSON if refusal == Refusal.NOT_A_PERSON else CloseCode.UNAUTHENTICATED)
            return
        organization_id: uuid.UUID = self.scope["url_route"]["kwargs"]["org_id"]
        membership = await database_sync_to_async(_membership)(user, organization_id)
        if membership is None:
            await self._refuse(CloseCode.NOT_FOUND)
            return
        self.watch = Watch(
            user_id=user.pk,
            organization_id=membership.organization_id,
            sees_all=selectors.approval_sees_all(membership=membership),
        )
        # Join before reading the snapshot, so no change falls between the two (one may arrive twice; the
        # client keys approvals by id).
        self.groups = self.watch.groups
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept(self._subprotocol())
        approvals = await database_sync_to_async(_snapshot)(membership)
        await self.send_json({"event": "snapshot", "approvals": approvals})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """The socket is one-way: decisions go through the REST API, so anything a client sends is ignored."""

    async def approval_event(self, message: dict[str, Any]) -> None:
        watch = self.watch
        approval = message.get("approval")
        if watch is None or not isinstance(approval, dict) or not watch.may_see(approval):
            return
        now = time.monotonic()
        if now - self.checked_at > RECHECK_SECONDS:
            # Three queries: done at most every few seconds per socket, not for every event in a burst.
            refusal = await database_sync_to_async(_still_allowed)(watch, self.scope.get("token_id"))
            if refusal is not None:
                await self.close(code=int(refusal))
                return
            self.checked_at = now
        await self.send_json({"event": message.get("event"), "approval": approval})
