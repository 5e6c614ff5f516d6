"""`aileron audit query`: what agents did through Aileron; `aileron audit admin`: what people changed. Newest first."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from aileron_cli.client import CliError
from aileron_cli.common import console, emit_json, err_console, fail_cleanly, logged_in_api, require_login

RELATIVE = re.compile(r"^(\d{1,6})([mhd])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def since_parse(value: str, *, now: datetime | None = None) -> datetime:
    """`30m`, `12h`, `2d` (that long ago) or an ISO 8601 timestamp (UTC when it has no offset)."""
    text = value.strip()
    relative = RELATIVE.match(text)
    if relative:
        return (now or datetime.now(UTC)) - timedelta(**{UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--since {value!r}: expected 30m, 12h, 2d or an ISO 8601 time like 2030-01-02T03:04:05Z", exit_code=2
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _cost(usage: dict[str, Any] | None) -> str:
    if not usage or usage.get("cost_usd") is None:
        return "-"
    return f"${usage['cost_usd']:.4f}"


def _latency(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def records_table(records: list[dict[str, Any]]) -> Table:
    table = Table(title="Audit log", title_justify="left")
    for column in ("time", "user", "agent", "action", "decision", "status", "latency", "cost"):
        table.add_column(column)
    for r in records:
        table.add_row(
            str(r["at"])[:19].replace("T", " "),
            (r.get("user") or {}).get("email", "-"),
            r.get("agent") or "-",
            r.get("action") or r.get("host") or "-",
            r.get("decision") or "-",
            str(r["upstream_status"]) if r.get("upstream_status") is not None else "-",
            _latency(r.get("latency_ms")),
            _cost(r.get("usage")),
        )
    return table


def _change(event: dict[str, Any]) -> str:
    """The fields that changed, `role: member -> admin`; all of them for a create or a delete."""
    before, after = event.get("before") or {}, event.get("after") or {}
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    if before and after:
        return ", ".join(f"{k}: {before.get(k)} -> {after.get(k)}" for k in keys) or "-"
    shown = after or before
    return ", ".join(f"{k}: {v}" for k, v in shown.items() if v not in (None, "", [])) or "-"


def admin_events_table(events: list[dict[str, Any]]) -> Table:
    table = Table(title="Admin events", title_justify="left")
    for column in ("time", "actor", "role", "action", "target", "change"):
        table.add_column(column)
    for e in events:
        table.add_row(
            str(e["created_at"])[:19].replace("T", " "),
            escape(e.get("actor_email") or "(system)"),
            e.get("actor_role") or "-",
            e["action"],
            escape(e.get("target_label") or e.get("target_id") or "-"),  # names people chose, not markup
            escape(_change(e)),
        )
    return table


@click.group()
def audit() -> None:
    """The audit log: every request your agents made through Aileron (admins and auditors: everyone's), and
    every change people made to the organization (admins and auditors)."""


@audit.command("query")
@click.option("--action", default=None, help="An action, or a prefix ending in * (e.g. 'stripe.*').")
@click.option("--connector", default=None, help="Only this connector's requests.")
@click.option(
    "--decision", type=click.Choice(["allow", "deny", "approval_required", "error"]), default=None, help="Only these."
)
@click.option("--since", default=None, help="30m, 12h, 2d, or an ISO 8601 time.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def audit_query(
    action: str | None, connector: str | None, decision: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """Recent audit records, newest first."""

    @fail_cleanly
    def run() -> None:
        params: dict[str, str | int] = {"limit": limit}
        if since is not None:
            params["since"] = since_parse(since).isoformat()
        for name, value in (("action", action), ("connector", connector), ("decision", decision)):
            if value:
                params[name] = value
        login = require_login()
        with logged_in_api() as api:
            page = api.get(f"/api/v1/orgs/{login.organization_id}/audit/", params=params)
        records = page["results"]
        if as_json:
            emit_json(records)
            return
        if not records:
            console.print("No audit records match.")
            return
        console.print(records_table(records))
        if page.get("count", 0) > len(records):
            err_console.print(f"{len(records)} of {page['count']} shown; use --limit or narrow with filters.")

    run()


@audit.command("admin")
@click.option("--action", default=None, help="An action, or a prefix ending in * (e.g. 'member.*').")
@click.option("--actor", default=None, help="Only changes made by this email.")
@click.option("--target-type", default=None, help="Only changes to this kind of thing (member, team, token...).")
@click.option("--since", default=None, help="30m, 12h, 2d, or an ISO 8601 time.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
def audit_admin(
    action: str | None, actor: str | None, target_type: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """Who changed what in the organization (roles, teams, tokens, policies...), newest first."""

    @fail_cleanly
    def run() -> None:
        params: dict[str, str | int] = {"limit": limit}
        if since is not None:
            params["since"] = since_parse(since).isoformat()
        for name, value in (("action", action), ("actor", actor), ("target_type", target_type)):
            if value:
                params[name] = value
        login = require_login()
        with logged_in_api() as api:
            page = api.get(f"/api/v1/orgs/{login.organization_id}/audit/admin/", params=params)
        events = page["results"]
        if as_json:
            emit_json(events)
            return
        if not events:
            console.print("No admin events match.")
            return
        console.print(admin_events_table(events))
        if page.get("count", 0) > len(events):
            err_console.print(f"{len(events)} of {page['count']} shown; use --limit or narrow with filters.")

    run()
