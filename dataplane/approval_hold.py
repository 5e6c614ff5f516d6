"""Step 3's hold: an action that needs approval waits (without a thread) for people, and uses a grant once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mitmproxy import http

from dataplane import problems
from dataplane.audit_records import redact_args
from dataplane.control import ApprovalTicket, ControlPlane, ControlPlaneError, CredentialRef, NotFoundError
from dataplane.flowstate import Pending
from dataplane.problems import Refusal

log = logging.getLogger("aileron.proxy")

RETRY_AFTER_SECONDS = 30  # the hint an agent gets when its held request's window closed undecided
DISCONNECT_CHECK_SECONDS = 1.0  # how often a held request checks that its agent is still there


async def hold(
    control: ControlPlane,
    flow: http.HTTPFlow,
    pending: Pending,
    ref: CredentialRef,
    *,
    sensitive: Sequence[str],
    path: str,
    query: str,
    body: bytes,
    why: str,
) -> ApprovalTicket:
    """Ask for the exact request's approval and wait up to its window; the used grant, or a Refusal."""
    ctx_ = pending.live.context
    held = {
        "session_id": ctx_.session_id,
        "request_id": pending.request_id,
        "connector": pending.connector,
        "action": pending.action,
        "args": redact_args(pending.args, sensitive),
        "method": flow.request.method,
        "host": pending.host,
        "path": path,
        "query": query,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_bytes": len(body),
        "credential_id": ref.credential_id,
        "reason": why[:4000],
    }
    ticket = await _claim(control, held)
    if ticket.state == "pending":
        pending.approval_id = ticket.id
        log.info("request %s (%s) held for approval %s", pending.request_id, pending.action, ticket.id)
        try:
            ticket = await _wait_while_connected(control, flow, ticket, pending.request_id)
        except NotFoundError:
            gone = {"approval_id": ticket.id}
            raise Refusal(problems.APPROVAL_LAPSED, f"approval {ticket.id} is gone", gone) from None
        except ControlPlaneError as exc:
            raise Refusal(problems.CONTROL_PLANE_UNAVAILABLE, f"cannot wait for the approval: {exc}") from None
        if ticket.used_now and not flow.client_conn.connected:
            # The agent went away while it waited: give the grant back for its identical retry.
            try:
                await asyncio.to_thread(control.approval_release, ticket.id, request_id=pending.request_id)
            except ControlPlaneError:
                log.warning("request %s: could not give back approval %s", pending.request_id, ticket.id)
            raise Refusal(
                problems.APPROVAL_PENDING, "the agent disconnected before the grant", {"approval_id": ticket.id}
            )
    if ticket.state == "granted" and ticket.used_now:
        return ticket
    extra: dict[str, Any] = {"approval_id": ticket.id, "action": pending.action}
    if ticket.state == "pending":
        until = _earlier(ticket.expires_at, pending.live.context.expires_at)
        raise Refusal(
            problems.APPROVAL_PENDING,
            f"no approver decided within {ticket.window_seconds} s; approval {ticket.id} stays pending until "
            f"{until} while this session lasts (ending the session, as `aileron launch` does when the agent exits, "
            "withdraws it): keep working, and send the identical request again once it is granted",
            {**extra, "expires_at": until, "retry_after_seconds": RETRY_AFTER_SECONDS},
        )
    if ticket.state == "rejected":
        who = ", ".join(ticket.approvers) or "an approver"
        raise Refusal(
            problems.APPROVAL_REJECTED,
            f"{who} rejected {pending.action}: {ticket.decision_reason}",
            {**extra, "reason": ticket.decision_reason, "approvers": list(ticket.approvers)},
        )
    if ticket.state in ("used", "granted"):
        raise Refusal(
            problems.APPROVAL_LAPSED,
            f"approval {ticket.id} was used by an identical request; send again to ask anew",
            extra,
        )
    raise Refusal(problems.APPROVAL_LAPSED, f"approval {ticket.id} is {ticket.state}", extra)


def _earlier(first: str, second: str) -> str:
    """The earlier of two ISO 8601 times (the approval's expiry, the session's); the first if either is bad."""
    try:
        return first if datetime.fromisoformat(first) <= datetime.fromisoformat(second) else second
    except (TypeError, ValueError):
        return first


async def _wait_while_connected(
    control: ControlPlane, flow: http.HTTPFlow, ticket: ApprovalTicket, request_id: str
) -> ApprovalTicket:
    """The decision, or a Refusal as soon as the agent disconnects: what its request holds (its body, in the
    budget of bodies in flight) is given back then, not at the end of the window."""
    wait = asyncio.ensure_future(
        control.approval_wait(ticket.id, timeout=float(ticket.window_seconds), request_id=request_id)
    )
    try:
        while True:
            done, _ = await asyncio.wait({wait}, timeout=DISCONNECT_CHECK_SECONDS)
            if done:
                return wait.result()
            if not flow.client_conn.connected:
                raise Refusal(
                    problems.APPROVAL_PENDING,
                    f"the agent disconnected while its request waited; approval {ticket.id} stays pending while "
                    "this session lasts: send the identical request again once it is granted",
                    {"approval_id": ticket.id},
                )
    finally:
        if not wait.done():
            wait.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await wait


async def _claim(control: ControlPlane, held: dict[str, Any]) -> ApprovalTicket:
    try:
        return await asyncio.to_thread(control.approval_claim, held)
    except NotFoundError:
        raise Refusal(problems.PROXY_AUTH_REQUIRED, "the session ended while its request waited") from None
    except ControlPlaneError as exc:
        raise Refusal(problems.CONTROL_PLANE_UNAVAILABLE, f"cannot ask for approval: {exc}") from None
