"""Step 3 of a request: which connector action it is, whether the connector is enabled, what policy says."""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from connectors.identify import Catalog, Identified
from connectors.matcher import Refused
from connectors.package import Action
from dataplane import problems
from dataplane.flowstate import Pending
from dataplane.problems import Refusal


def identify(catalog: Catalog, pending: Pending, request: http.Request, *, body: bytes) -> list[Identified]:
    """The request's action(s) on its connector, recorded on `pending`; a Refusal when none or ambiguous."""
    path, _, query = request.path.partition("?")
    try:
        found = catalog.identify(
            host=pending.host,
            method=request.method,
            path=path,
            query=query,
            headers=request.headers,
            body=body,
        )
    except Refused as exc:
        raise Refusal(problems.AMBIGUOUS_REQUEST, str(exc)) from None
    if not found:
        raise Refusal(
            problems.UNMATCHED_ACTION,
            f"{request.method} {path} is not an action of the {pending.connector} connector",
        )
    pending.action = found[0].action if len(found) == 1 else ",".join(i.action for i in found)
    pending.args = _merge_args(found)
    return found


def decide(pending: Pending, actions: dict[str, Action], found: list[Identified]) -> tuple[str, str]:
    """(outcome, reason): the connector must be enabled; the strictest policy outcome over the actions wins."""
    live = pending.live
    ctx_ = live.context
    if pending.connector not in ctx_.connectors:
        raise Refusal(problems.CONNECTOR_DISABLED, f"the {pending.connector} connector is not enabled for you")
    outcome = "allow"
    reasons = []
    for item in found:
        action = actions[item.action]
        decision = live.engine.decide(
            user_id=ctx_.user_id,
            team_ids=ctx_.team_ids,
            session_id=ctx_.session_id,
            agent=ctx_.agent,
            project_id=ctx_.project_id,
            connector=item.connector,
            action=item.action,
            args=item.args,
            default_approval=action.approval_required(item.args),
        )
        if decision.outcome == "deny" or (decision.outcome == "approval_required" and outcome == "allow"):
            outcome = decision.outcome
        reasons.append(decision.reason)
    reason = "; ".join(r for r in reasons if r) or "allowed"
    pending.decision = (outcome, reason)
    if outcome == "deny":
        raise Refusal(problems.POLICY_DENIED, reason, {"action": pending.action})
    return outcome, reason


def model_of(args: dict[str, Any]) -> str | None:
    model = args.get("model")
    return str(model) if isinstance(model, str) else None


def _merge_args(found: list[Identified]) -> dict[str, Any]:
    if len(found) == 1:
        return dict(found[0].args)
    return {item.action: item.args for item in found}
