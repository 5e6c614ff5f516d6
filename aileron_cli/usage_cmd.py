"""`aileron usage`: requests, spend, tokens, errors and approvals per team, project, agent, user, connector,
action or model."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click
from rich.table import Table

from aileron_cli.audit_cmd import since_parse
from aileron_cli.common import console, emit_json, fail_cleanly, logged_in_api, require_login

GROUPS = ("team", "project", "agent", "user", "connector", "action", "model")


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def usage_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"Usage by {report['group_by']}, {report['since'][:16]} to {report['until'][:16]} UTC")
    for heading in ("", "requests", "refused", "failed", "p50 ms", "p95 ms", "input", "output", "cached", "cost $",
                    "approvals", "decided p50 s"):  # fmt: skip
        table.add_column(heading, justify="left" if not heading else "right")
    for group in report["groups"]:
        name = group["name"] if group["name"] is not None else "(none)"
        cost = Decimal(group["cost_usd"])
        table.add_row(
            str(name),
            f"{group['requests']:,}",
            f"{group['refusals']:,}",
            f"{group['failed']:,} ({group['error_rate']:.0%})",
            _ms(group["latency_ms_p50"]),
            _ms(group["latency_ms_p95"]),
            f"{group['input_tokens']:,}",
            f"{group['output_tokens']:,}",
            f"{group['cache_read_tokens'] + group['cache_write_tokens']:,}",
            f"{cost:,.4f}" + ("*" if group["unpriced_calls"] else ""),
            f"{group['approvals_held']:,}",
            _ms(group["decision_seconds_p50"]),
        )
    return table


@click.command("usage")
@click.option("--by", "group_by", type=click.Choice(GROUPS), default="team", show_default=True, help="Group by.")
@click.option("--since", default="7d", show_default=True, help="30m, 12h, 2d, or an ISO 8601 time.")
@click.option("--until", default=None, help="30m, 12h, 2d (ago), or an ISO 8601 time; default now.")
@click.option("--interval", type=click.Choice(["hour", "day", "week"]), default=None, help="Also per interval.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def usage(group_by: str, since: str, until: str | None, interval: str | None, as_json: bool) -> None:
    """Requests, refusals, failures, latency, LLM tokens and spend, and approvals, per team, project, agent,
    user, connector, action or model (admins and auditors: everyone's; others: their own agents')."""

    @fail_cleanly
    def run() -> None:
        params: dict[str, str] = {"group_by": group_by, "since": since_parse(since).isoformat()}
        params["until"] = (since_parse(until) if until else datetime.now(UTC)).isoformat()
        if interval:
            params["interval"] = interval
        login = require_login()
        with logged_in_api() as api:
            report = api.get(f"/api/v1/orgs/{login.organization_id}/usage/", params=params)
        if as_json:
            emit_json(report)
            return
        if not report["groups"]:
            console.print("Nothing was audited in that time.")
            return
        console.print(usage_table(report))
        if any(g["unpriced_calls"] for g in report["groups"]):
            console.print("* some LLM calls used a model no price source knows (set AILERON_PRICE_TABLE)")

    run()
