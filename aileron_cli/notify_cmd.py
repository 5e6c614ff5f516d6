"""`aileron notify`: where the organization's approvals are sent (a signed webhook, Slack, email)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from aileron_cli.client import ApiClient, CliError
from aileron_cli.common import console, current_org, emit_json, fail_cleanly, logged_in_api, warn_line
from aileron_cli.team_cmd import every

EVENTS = ("created", "decided", "expired", "cancelled")


def channel_find(api: ApiClient, organization_id: str, name: str) -> dict[str, Any]:
    """The channel NAME (any case), or a one-line error listing the ones there are."""
    channels = every(api, f"/api/v1/orgs/{organization_id}/notification-channels/")
    found = [c for c in channels if c["name"] == name.strip().lower() or c["id"] == name]
    if not found:
        known = ", ".join(c["name"] for c in channels[:10]) or "none yet: `aileron notify add NAME --webhook URL`"
        raise CliError(f"no notification channel {name!r} in this organization (channels: {known})", exit_code=2)
    return found[0]


def events_parse(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    chosen = [e.strip() for e in raw.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise CliError(f"--events takes some of {','.join(EVENTS)} (got {raw!r})", exit_code=2)
    return chosen


@click.group()
def notify() -> None:
    """Notification channels: held requests, decisions and expiries sent to people who are not watching."""


@notify.command("add")
@click.argument("name")
@click.option("--webhook", "webhook", metavar="URL", help="POST signed JSON to URL (the secret is printed once).")
@click.option("--slack", "slack", metavar="URL", help="A Slack incoming-webhook URL.")
@click.option("--email", "email", metavar="ADDR[,ADDR]", help="Email these addresses (members who decide get links).")
@click.option("--events", "events", metavar="E[,E]", help=f"Which events [default: {','.join(EVENTS)}].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def notify_add(
    name: str, webhook: str | None, slack: str | None, email: str | None, events: str | None, as_json: bool
) -> None:
    """Send the organization's approvals to a new channel NAME (one of --webhook, --slack or --email)."""
    chosen = [(kind, value) for kind, value in (("webhook", webhook), ("slack", slack), ("email", email)) if value]
    if len(chosen) != 1:
        raise CliError("say where to send: exactly one of --webhook URL, --slack URL or --email ADDR", exit_code=2)
    kind, target = chosen[0]
    body: dict[str, Any] = {"name": name, "kind": kind, "target": target}
    wanted = events_parse(events)
    if wanted is not None:
        body["events"] = wanted
    org = current_org()
    with logged_in_api() as api:
        created = api.post(f"/api/v1/orgs/{org}/notification-channels/", body)
    if as_json:
        emit_json(created)
        return
    console.print(f"Added the {kind} channel {created['name']} ({', '.join(created['events'])}).", markup=False)
    if created.get("secret"):
        console.print(f"Signing secret (shown once; verify X-Aileron-Signature with it): {created['secret']}")


@notify.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def notify_list(as_json: bool) -> None:
    """The channels, what they are sent, and how the last delivery went."""
    org = current_org()
    with logged_in_api() as api:
        channels = every(api, f"/api/v1/orgs/{org}/notification-channels/")
    if as_json:
        emit_json(channels)
        return
    if not channels:
        console.print("No notification channels yet: `aileron notify add NAME --webhook URL`.")
        return
    table = Table(title="Notification channels", title_justify="left")
    for column in ("name", "kind", "target", "events", "last delivery"):
        table.add_column(column, overflow="fold")
    for c in channels:
        last = c["last_status"] or "none yet"
        if c["last_error"]:
            last += f": {c['last_error']}"
        if c["last_delivery_at"]:
            last += f" ({c['last_delivery_at'][:19].replace('T', ' ')} UTC)"
        name = c["name"] if c["enabled"] else f"{c['name']} (disabled)"
        table.add_row(name, c["kind"], c["target"], ",".join(c["events"]), last)
    console.print(table)
    failing = [c["name"] for c in channels if c["last_status"] == "failed"]
    if failing:
        warn_line(f"aileron: the last delivery to {', '.join(failing)} failed; `aileron notify test NAME` retries")


@notify.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def notify_remove(name: str, as_json: bool) -> None:
    """Stop sending to the channel NAME."""
    org = current_org()
    with logged_in_api() as api:
        found = channel_find(api, org, name)
        api.delete(f"/api/v1/orgs/{org}/notification-channels/{found['id']}/")
    if as_json:
        emit_json({"removed": found})
        return
    console.print(f"Removed the channel {found['name']}.", markup=False)


@notify.command("test")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def notify_test(name: str, as_json: bool) -> None:
    """Send a test message to the channel NAME now (once); fails with the receiver's answer."""
    org = current_org()
    with logged_in_api() as api:
        found = channel_find(api, org, name)
        tested = api.post(f"/api/v1/orgs/{org}/notification-channels/{found['id']}/test/", {})
    if as_json:
        emit_json(tested)
    if not tested["delivered"]:
        raise CliError(f"the test message to {tested['name']} was not delivered: {tested['error']}")
    if not as_json:
        console.print(f"Delivered a test message to {tested['name']}.", markup=False)
