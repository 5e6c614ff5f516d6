"""Approvals made the way the data plane asks for them, for tests in other apps."""

from __future__ import annotations

import uuid

from approvals.models import Approval
from approvals.services import HeldRequest, approval_claim
from tenants.models import ApiToken


def held_approval(session: ApiToken, **args: str) -> Approval:
    """A pending approval of a Stripe refund asked by `session`."""
    return approval_claim(
        held=HeldRequest(
            session_id=session.pk,
            request_id=uuid.uuid4(),
            connector="stripe",
            action="stripe.create-refund",
            args=args or {"amount": "1"},
            method="POST",
            host="api.stripe.com",
            path="/v1/refunds",
            query="",
            body_sha256="0" * 64,
            body_bytes=0,
            credential_id=uuid.uuid4(),
        )
    ).approval
