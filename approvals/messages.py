"""What a notification says, in each channel's format. Pure: no Django; the inputs are plain dicts.

A notice shows what the approvals page shows about a held request (action, connector, requester, agent,
session, project, parsed arguments, method, host and path, why it was held, when it expires) and never more:
no request body, no credential, no token but the one-time link meant for the recipient.
Everything the agent or the requester wrote is untrusted: Slack's control characters are escaped and email
headers get one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The approval's fields a notice carries (a subset of the API's ApprovalSerializer, as the page shows them).
SHOWN_FIELDS = (
    "id",
    "organization_id",
    "state",
    "connector",
    "action",
    "args",
    "method",
    "host",
    "path",
    "query",
    "held_reason",
    "requester_email",
    "agent",
    "session_id",
    "project_id",
    "four_eyes",
    "approvers_required",
    "created_at",
    "expires_at",
    "decided_at",
    "decision_reason",
    "decisions",
)
# What a credential-due notice carries: where and what, never the value.
CREDENTIAL_FIELDS = ("id", "name", "vault", "vault_id", "connector", "version", "why", "due_at", "owners")
ARG_VALUE_MAX = 200
SUBJECT_MAX = 200
VERBS = {
    "created": "Approval needed",
    "decided": "Decided",
    "expired": "Expired",
    "cancelled": "Cancelled",
    "test": "Test",
}


@dataclass(frozen=True, slots=True)
class Notice:
    """One event for people: a headline, labelled facts, the JSON a webhook gets, and maybe a link."""

    event: str
    organization: dict[str, str]
    headline: str
    facts: list[tuple[str, str]]
    data: dict[str, Any]
    link: str | None = None
    link_for: str | None = None
    page_url: str | None = None
    notes: list[str] = field(default_factory=list)


def one_line(text: str, limit: int = SUBJECT_MAX) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return one_line(text, ARG_VALUE_MAX)


def approval_shown(approval: dict[str, Any]) -> dict[str, Any]:
    shown = {key: approval.get(key) for key in SHOWN_FIELDS}
    shown["decisions"] = [
        {k: d.get(k) for k in ("approver", "decision", "reason", "at")} for d in approval.get("decisions") or []
    ]
    return shown


def approval_notice(
    *,
    event: str,
    organization: dict[str, str],
    approval: dict[str, Any],
    project: str | None = None,
    link: str | None = None,
    link_for: str | None = None,
    page_url: str | None = None,
) -> Notice:
    """The notice of EVENT for APPROVAL (the API's serialized approval)."""
    action = approval.get("action") or f"{approval.get('method')} {approval.get('host')}{approval.get('path')}"
    requester = approval.get("requester_email") or "unknown"
    state = approval.get("state", "")
    if event == "decided":
        verb = "Granted" if state == "granted" else "Rejected" if state == "rejected" else "Decided"
    else:
        verb = VERBS.get(event, event.capitalize())
    headline = one_line(f"{verb}: {action} asked by {requester}")
    request = f"{approval.get('method')} {approval.get('host')}{approval.get('path')}"
    if approval.get("query"):
        request += f"?{approval['query']}"
    facts: list[tuple[str, str]] = [
        ("Action", _value(action)),
        ("Connector", _value(approval.get("connector", ""))),
        ("Requester", _value(requester)),
    ]
    if approval.get("agent"):
        facts.append(("Agent", _value(approval["agent"])))
    facts.append(("Session", _value(approval.get("session_id", ""))))
    if project:
        facts.append(("Project", _value(project)))
    # The agent names its arguments too: the name is one line, like every value (no forged line in a message).
    facts += [(f"Argument {one_line(k, 60)}", _value(v)) for k, v in sorted((approval.get("args") or {}).items())]
    facts.append(("Request", _value(request)))
    if approval.get("held_reason"):
        facts.append(("Held because", _value(approval["held_reason"])))
    if event == "created":
        facts.append(("Expires", _value(approval.get("expires_at", ""))))
        if approval.get("four_eyes"):
            facts.append(("Four eyes", "the requester may not decide it"))
    decisions = approval.get("decisions") or []
    for d in decisions:
        said = f"{d.get('decision')} by {d.get('approver')}" + (f": {d['reason']}" if d.get("reason") else "")
        facts.append(("Decision", _value(said)))
    if event in ("expired", "cancelled") and approval.get("decision_reason"):
        facts.append(("Why", _value(approval["decision_reason"])))
    notes = []
    if event == "created" and link:
        notes.append(
            f"This link decides this approval once, as {link_for}; it stops working when the approval is decided "
            "or expires. Do not forward it."
        )
    data = {"approval": approval_shown(approval), "project": project}
    return Notice(
        event=event,
        organization=organization,
        headline=headline,
        facts=facts,
        data=data,
        link=link,
        link_for=link_for,
        page_url=page_url,
        notes=notes,
    )


def event_type(event: str) -> str:
    """The event's name for machines (a webhook's `type` and X-Aileron-Event)."""
    if event == "test":
        return "test"
    if event == "credential_due":
        return "credential.due"
    return f"approval.{event}"


def credential_due_notice(
    *, organization: dict[str, str], credential: dict[str, Any], page_url: str | None = None
) -> Notice:
    """A credential expires, or is due for replacement, soon: its name, vault and version, never its value."""
    name, vault = str(credential.get("name", "")), str(credential.get("vault", ""))
    why, due_at = str(credential.get("why", "")), str(credential.get("due_at", ""))
    headline = one_line(f"Credential {name} in {vault}: {why} {due_at[:10]}")
    facts = [
        ("Credential", _value(name)),
        ("Vault", _value(vault)),
        ("Connector", _value(credential.get("connector", ""))),
        ("Version", _value(credential.get("version", ""))),
        ("Due", _value(f"{why} at {due_at}")),
        ("Owners", _value(", ".join(credential.get("owners") or []) or "none")),
        ("To do", _value(f"an owner runs `aileron secret update {name}`")),
    ]
    return Notice(
        event="credential_due",
        organization=organization,
        headline=headline,
        facts=facts,
        data={"credential": {k: credential.get(k) for k in CREDENTIAL_FIELDS}},
        page_url=page_url,
    )


def channel_test_notice(*, organization: dict[str, str], channel: str, page_url: str | None) -> Notice:
    return Notice(
        event="test",
        organization=organization,
        headline=one_line(f"Test: the notification channel {channel} works"),
        facts=[("Channel", _value(channel))],
        data={"channel": channel},
        page_url=page_url,
    )


# --- formats ---------------------------------------------------------------------------------------------------


def webhook_body(notice: Notice, *, delivery_id: str, sent_at: int) -> bytes:
    """The JSON a webhook receives: compact, keys sorted, so the signed bytes are the sent bytes."""
    body = {
        "id": delivery_id,
        "type": event_type(notice.event),
        "created": sent_at,
        "organization": notice.organization,
        "headline": notice.headline,
        "data": notice.data,
        "link": notice.link,
        "link_for": notice.link_for,
        "page_url": notice.page_url,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def slack_escape(text: str) -> str:
    """Slack mrkdwn's three control characters: an agent's `<https://evil|Grant>` stays text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_code(text: str) -> str:
    """A value as inline code: Slack turns no address in it into a link (an agent's `https://evil…` stays text)."""
    return "`" + slack_escape(text.replace("`", "'")) + "`" if text else ""


def slack_payload(notice: Notice) -> dict[str, Any]:
    """An incoming-webhook message: `text` (the notification's fallback) and Block Kit `blocks`."""
    fields = "\n".join(f"*{slack_escape(label)}:* {slack_code(value)}" for label, value in notice.facts)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{slack_escape(notice.headline)}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": fields[:2900]}},
    ]
    if notice.link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open to decide"},
                        "url": notice.link,
                        "style": "primary",
                    }
                ],
            }
        )
    elif notice.page_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Approvals"}, "url": notice.page_url}
                ],
            }
        )
    context = [f"{slack_escape(notice.organization.get('name', ''))} · Aileron"] + [
        slack_escape(n) for n in notice.notes
    ]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " ".join(context)[:2900]}]})
    return {"text": slack_escape(notice.headline), "blocks": blocks}


def email_message(notice: Notice) -> tuple[str, str]:
    """Subject (one line) and plain-text body."""
    subject = one_line(f"[Aileron {notice.organization.get('name', '')}] {notice.headline}")
    width = max((len(label) for label, _ in notice.facts), default=0)
    lines = [notice.headline, ""]
    lines += [f"{label.ljust(width)}  {value}" for label, value in notice.facts]
    if notice.link:
        lines += ["", "Decide it (grant or reject) here:", notice.link]
    if notice.page_url:
        lines += ["", "The approvals page:", notice.page_url]
    if notice.notes:
        lines += ["", *notice.notes]
    lines += [
        "",
        "-- ",
        "Aileron: you get this because your organization sends approvals (and credential warnings) to this address.",
    ]
    return subject, "\n".join(lines) + "\n"
