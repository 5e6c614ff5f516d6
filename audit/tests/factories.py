"""Records as the data plane ships them, for tests here and in the isolation and role walkers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from audit import services
from tenants.models import ApiToken

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def attempt(session: ApiToken | str, record_id: uuid.UUID | str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(record_id or uuid.uuid4()),
        "phase": "attempt",
        "session_id": str(session.pk if isinstance(session, ApiToken) else session),
        "at": T0.isoformat(),
        "kind": "credentialed",
        "connector": "stripe",
        "action": "stripe.charges.create",
        "method": "POST",
        "host": "api.stripe.com",
        "path": "/v1/charges",
        "args": {"amount": 500, "currency": "usd"},
        "decision": "allow",
        "reason": "policy permits",
        "problem_type": "",
        "credential_id": str(uuid.UUID(int=7)),
        **fields,
    }


def outcome(session: ApiToken | str, record_id: uuid.UUID | str, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(record_id),
        "phase": "outcome",
        "session_id": str(session.pk if isinstance(session, ApiToken) else session),
        "at": T0.isoformat(),
        "upstream_status": 200,
        "latency_ms": 123.5,
        "request_bytes": 64,
        "response_bytes": 2048,
        "usage": None,
        "completed_at": (T0 + timedelta(milliseconds=124)).isoformat(),
        **fields,
    }


def record_stored(session: ApiToken, **fields: Any) -> str:
    """Ingest one complete record for SESSION (as the data plane would) and return its id."""
    first = attempt(session, **fields)
    result = services.audit_ingest(records=[first, outcome(session, first["id"])])
    assert not result.rejected, result.rejected
    return str(first["id"])
