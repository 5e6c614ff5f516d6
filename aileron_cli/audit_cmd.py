"""`aileron audit query|verify|checkpoint|admin`: what agents did, proof nobody changed it, what people changed."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
        try:
            return (now or datetime.now(UTC)) - timedelta(**{UNITS[relative.group(2)]: int(relative.group(1))})
        except OverflowError:
            raise CliError(f"--since {value!r}: that is before the year 1", exit_code=2) from None
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


def _print_page(
    path: str,
    filters: dict[str, str | None],
    *,
    since: str | None,
    limit: int,
    as_json: bool,
    table: Callable[[list[dict[str, Any]]], Table],
    what: str,
) -> None:
    """One page of an organization's list under /orgs/{org}/PATH, newest first: JSON, or a table."""

    @fail_cleanly
    def run() -> None:
        params: dict[str, str | int] = {"limit": limit}
        if since is not None:
            params["since"] = since_parse(since).isoformat()
        params.update({name: value for name, value in filters.items() if value})
        login = require_login()
        with logged_in_api() as api:
            page = api.get(f"/api/v1/orgs/{login.organization_id}/{path}", params=params)
        rows = page["results"]
        if as_json:
            emit_json(rows)
            return
        if not rows:
            console.print(f"No {what} match.")
            return
        console.print(table(rows))
        if page.get("count", 0) > len(rows):
            err_console.print(f"{len(rows)} of {page['count']} shown; use --limit or narrow with filters.")

    run()


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

    filters = {"action": action, "connector": connector, "decision": decision}
    _print_page("audit/", filters, since=since, limit=limit, as_json=as_json, table=records_table, what="audit records")


def _read_checkpoint(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read the checkpoint {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CliError(f"the checkpoint {path} is not JSON (use the output of `aileron audit checkpoint`)") from None
    if not isinstance(data, dict):
        raise CliError(f"the checkpoint {path} is not a JSON object (use the output of `aileron audit checkpoint`)")
    return data


@audit.command("verify")
@click.option("--since", default=None, help="Start at links made since: 30m, 12h, 2d, or an ISO 8601 time.")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    default=None,
    metavar="FILE",
    help="A checkpoint saved earlier by `aileron audit checkpoint`: catches a chain cut short or rebuilt since.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verification as JSON.")
def audit_verify(since: str | None, checkpoint_file: str | None, as_json: bool) -> None:
    """Check the audit log's hash chain: intact, or the first record edited, deleted, reordered or inserted.

    Exits 0 when intact, 3 when broken, and 4 when a --checkpoint given could not be checked (the chain was
    pruned past it, or --since starts after it)."""

    @fail_cleanly
    def run() -> None:
        body: dict[str, Any] = {}
        if since is not None:
            body["since"] = since_parse(since).isoformat()
        if checkpoint_file is not None:
            body["checkpoint"] = _read_checkpoint(checkpoint_file)
        login = require_login()
        with logged_in_api() as api:
            result = api.post(f"/api/v1/orgs/{login.organization_id}/audit/verify/", body)
        if as_json:
            emit_json(result)
        elif result["intact"]:
            what = f"{result['checked']} link(s)" + (
                f" up to #{result['head_seq']}" if result["head_seq"] is not None else ""
            )
            against = f", and it reaches the checkpoint at #{result['against']['seq']}" if result["against"] else ""
            console.print(
                f"intact: {what}, {result['checkpoints']} stored checkpoint(s) checked{against}", markup=False
            )
        else:
            broken = result["broken"]
            where = f"record {broken['record_id']}" if broken["record_id"] else "a checkpoint"
            at = f" at #{broken['seq']}" if broken["seq"] >= 0 else ""
            console.print(f"BROKEN{at}: {where} was {broken['why']}: {broken['detail']}", markup=False)
        unchecked = result["against"] is not None and not result.get("against_checked", True)
        if result.get("note") and not as_json:
            label = "UNVERIFIABLE" if unchecked else "note"
            err_console.print(f"{label}: {result['note']}", markup=False)
        if not result["intact"]:
            sys.exit(3)
        if unchecked:
            sys.exit(4)

    run()


@audit.command("checkpoint")
@click.option("--output", "-o", default=None, metavar="FILE", help="Also write it to FILE (kept away from Aileron).")
def audit_checkpoint(output: str | None) -> None:
    """Sign the audit chain's head now and print the checkpoint (JSON). Keep it somewhere Aileron's database is
    not; `aileron audit verify --checkpoint FILE` later proves nothing before it was cut or rewritten."""

    @fail_cleanly
    def run() -> None:
        login = require_login()
        with logged_in_api() as api:
            made = api.post(f"/api/v1/orgs/{login.organization_id}/audit/checkpoint/", {})
        if output is not None:
            try:
                Path(output).write_text(json.dumps(made, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            except OSError as exc:
                raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
        emit_json(made)

    run()


@audit.command("retention")
@click.option("--days", type=click.IntRange(1, 36500), default=None, help="Keep records this many days (owners).")
@click.option("--forever", is_flag=True, help="Keep records for ever (the default; owners).")
@click.option("--json", "as_json", is_flag=True, help="Print the setting as JSON.")
def audit_retention(days: int | None, forever: bool, as_json: bool) -> None:
    """Show or set how long audit records are kept. Older ones are pruned daily, each time after a signed
    checkpoint of the chain as it was (save one first with `aileron audit checkpoint -o FILE`)."""

    @fail_cleanly
    def run() -> None:
        if days is not None and forever:
            raise CliError("give --days N or --forever, not both")
        login = require_login()
        path = f"/api/v1/orgs/{login.organization_id}/audit/retention/"
        with logged_in_api() as api:
            if days is None and not forever:
                setting = api.get(path)
            else:
                setting = api.put(path, {"days": days})
        if as_json:
            emit_json(setting)
            return
        kept = f"{setting['days']} day(s)" if setting["days"] else "for ever"
        who = f" (set by {setting['updated_by']})" if setting["updated_by"] else ""
        console.print(f"audit records are kept {kept}{who}", markup=False)

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

    filters = {"action": action, "actor": actor, "target_type": target_type}
    _print_page(
        "audit/admin/",
        filters,
        since=since,
        limit=limit,
        as_json=as_json,
        table=admin_events_table,
        what="admin events",
    )
