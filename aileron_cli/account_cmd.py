"""Getting in: `aileron init`, `join`, `login`, `invite`, and `status`."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.table import Table

from aileron_cli import state
from aileron_cli.client import ApiClient, CliError
from aileron_cli.common import (
    DEFAULT_PROXY,
    console,
    current_org,
    emit_json,
    fail_cleanly,
    key_socket,
    logged_in_api,
    require_login,
    set_up_keys,
    warn_if_cleartext,
)
from aileron_cli.session_cmd import live_sessions
from aileron_cli.team_cmd import team_find
from aileron_cli.vaultops import read_passphrase, read_token
from aileron_site import __version__


@click.command()
@click.option("--org", "org_name", required=True, help="Name of the new organization.")
@click.option("--email", required=True, help="Email of its first owner (you).")
@click.option("--name", default="", help="Your display name.")
@click.option("--server", default=None, help=f"Aileron service URL [default: {state.DEFAULT_SERVER}].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def init(org_name: str, email: str, name: str, server: str | None, as_json: bool) -> None:
    """Create an organization with you as its owner, log in, and set up your keys and personal vault.

    The passphrase that seals your private key comes from AILERON_PASSPHRASE or a hidden prompt.
    """
    existing = state.login_load()
    url = state.server_url(server)
    warn_if_cleartext(url)
    if existing is not None:
        raise CliError(
            f"already logged in as {existing.email} on {existing.server} "
            f"({state.login_path()}); use another AILERON_HOME or move that file away"
        )
    passphrase = read_passphrase(confirm=True)
    with ApiClient(url) as api:
        result = api.post("/api/v1/signup/", {"organization": org_name, "email": email, "name": name})
    org = result["organization"]
    login = state.Login(server=url, token=result["token"], email=result["user"]["email"], organization_id=org["id"])
    path = state.login_save(login)
    personal = set_up_keys(login, passphrase)
    with ApiClient(url, token=login.token) as api:
        team = _default_team(api, org["id"], result["user"]["id"])
    if as_json:
        emit_json(
            {
                "server": url,
                "organization": org,
                "user": result["user"],
                "role": result["role"],
                "login_file": str(path),
                "personal_vault": personal,
                "team": team,
            }
        )
        return
    console.print(f"Created organization [bold]{org['name']}[/] ({org['slug']}) with you as owner.")
    console.print(
        f"You are in the team {team['slug']}: `aileron connector enable github --team {team['slug']}` gives its "
        "agents GitHub, with the credential you add by `aileron secret add`."
    )
    console.print(f"Logged in as {result['user']['email']}; token stored in {path}")
    console.print("Your key pair is set up, sealed under your passphrase, with a personal vault.")


DEFAULT_TEAM = "Everyone"


def _default_team(api: ApiClient, organization_id: str, user_id: str) -> dict[str, Any]:
    """The new organization's first team, with its owner in it: connectors are enabled per team."""
    made = api.post(f"/api/v1/orgs/{organization_id}/teams/", {"name": DEFAULT_TEAM})
    api.post(f"/api/v1/orgs/{organization_id}/teams/{made['id']}/members/", {"user_id": user_id})
    return dict(made)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def logout(as_json: bool) -> None:
    """Revoke this machine's login token on the server and forget it here (your keys stay sealed there)."""
    login = state.login_load()
    if login is None:
        raise CliError(f"not logged in (no login in {state.login_path()})")
    try:
        with ApiClient(login.server, token=login.token) as api:
            who = api.get("/api/v1/whoami/")
            api.delete(f"/api/v1/tokens/{who['token_id']}/")
    except CliError as exc:
        if "(401)" not in str(exc):  # revoked or expired already: nothing left to revoke
            # Kept: forgetting a token that still works would leave nobody able to revoke it from here.
            raise CliError(f"the token could not be revoked on {login.server} ({exc}); still logged in") from None
    path = state.login_forget()
    if as_json:
        emit_json({"server": login.server, "email": login.email, "token_revoked": True, "login_file": str(path)})
        return
    console.print(f"Logged out {login.email}; the token is revoked and {path} removed.", markup=False)


@click.command()
@click.option("--name", default="", help="Your display name (new users only).")
@click.option("--server", default=None, help=f"Aileron service URL [default: {state.DEFAULT_SERVER}].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def join(name: str, server: str | None, as_json: bool) -> None:
    """Join an organization with an invitation secret (from AILERON_INVITATION, stdin or a hidden prompt)."""
    existing = state.login_load()
    url = state.server_url(server)
    warn_if_cleartext(url)
    if existing is not None and existing.server.rstrip("/") != url:
        raise CliError(f"logged in on {existing.server}, not {url}; use another AILERON_HOME to join there")
    invitation = read_token("AILERON_INVITATION", "Invitation secret: ")
    passphrase = read_passphrase(confirm=True) if existing is None else None
    with ApiClient(url, token=existing.token if existing else None) as api:
        result = api.post("/api/v1/invitations/accept/", {"token": invitation, "name": name})
    org = result["organization"]
    path = None
    login = existing
    if existing is None:
        if not result.get("token"):
            raise CliError("the server returned no login token for the new user")
        login = state.Login(server=url, token=result["token"], email=result["user"]["email"], organization_id=org["id"])
        path = state.login_save(login)
    assert login is not None  # noqa: S101
    set_up_keys(login, passphrase, organization_id=org["id"])
    if as_json:
        emit_json(
            {
                "server": url,
                "organization": org,
                "user": result["user"],
                "role": result["role"],
                "teams": result.get("teams", []),
                "login_file": str(path or state.login_path()),
            }
        )
        return
    teams = f" in {', '.join(result['teams'])}" if result.get("teams") else ""
    console.print(f"Joined [bold]{org['name']}[/] ({org['slug']}) as {result['role']}{teams}.")
    if path is not None:
        console.print(f"Logged in as {result['user']['email']}; token stored in {path}")


@click.command()
@click.option("--server", default=None, help="Aileron service URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def status(server: str | None, as_json: bool) -> None:
    """Show whether the service is reachable, its versions and backends, and who is logged in."""
    login = state.login_load()
    url = state.server_url(server)
    token = login.token if login and login.server.rstrip("/") == url else None
    token = os.environ.get("AILERON_TOKEN") or token
    with ApiClient(url, token=token) as api:
        try:
            health = api.get("/api/v1/health/")
        except CliError as exc:
            if as_json:
                emit_json({"server": url, "reachable": False, "error": str(exc), "cli_version": __version__})
                sys.exit(1)
            raise
        who = api.get("/api/v1/whoami/") if token else None
        due: list[Any] | None = None
        org = login.organization_id if login is not None else None
        if who is not None and who.get("kind") == "pat" and org:
            try:
                due = api.get(f"/api/v1/orgs/{org}/credentials/due/")
            except CliError:
                due = None  # an older service, or not a member any more: the rest of the status still stands
    report = {
        "server": url,
        "reachable": True,
        "cli_version": __version__,
        "service": health,
        "login": who,
        "dataplane": _dataplane_probe(health.get("proxy")),
        "sessions": live_sessions(),
        "credentials_due": due,
    }
    if as_json:
        emit_json(report)
        return
    table = Table(show_header=False, title=f"Aileron at {url}", title_justify="left")
    table.add_row("service", f"{health['status']} (version {health['version']}, {health['mode']} mode)")
    table.add_row("database", health["database"])
    table.add_row("channel layer", health["channel_layer"])
    age = health.get("worker_age_seconds")
    table.add_row(
        "worker",
        f"{health['broker']} broker; " + (f"last seen {age:.0f}s ago" if age is not None else "not seen yet"),
    )
    probe = report["dataplane"]
    table.add_row(
        "data plane",
        f"proxy {probe['proxy']} "
        + ("listening" if probe["listening"] else "not reachable")
        + (", key channel here" if probe["key_channel"] else ", key channel through the server (relayed)"),
    )
    if probe.get("health") is not None:
        table.add_row("audit", _audit_line(probe["health"]))
    if who is None:
        table.add_row("login", "not logged in (run `aileron init`)")
    else:
        user = who.get("user") or {}
        table.add_row(
            "login",
            f"{user.get('email', who['token_name'])} ({who['kind']} token, expires {who['expires_at']})",
        )
        for membership in who.get("memberships", []):
            table.add_row("", f"{membership['slug']}: {membership['role']}")
    sessions = report["sessions"]
    table.add_row("agents", f"{len(sessions)} live session(s) launched here" if sessions else "none running here")
    for s in sessions:
        table.add_row("", f"{s['session_id'][:8]} {s.get('agent', '')} in {s.get('sandbox', 'none')}")
    if due:
        table.add_row("credentials", f"{len(due)} to replace soon (`aileron secret update NAME`)")
        for d in due:
            table.add_row("", f"{d['name']} in {d['vault']}: {d['why']} {d['due_at'][:10]}")
    console.print(table)


def _dataplane_probe(served: str | None = None) -> dict[str, Any]:
    """Whether the data plane's proxy answers (AILERON_PROXY, else where the service says, SERVED) and its key
    channel exists here."""
    import socket

    from aileron_cli.launch import Proxy

    text = os.environ.get("AILERON_PROXY") or served or DEFAULT_PROXY
    try:
        proxy = Proxy.parse(text)
    except CliError:
        return {"proxy": text, "listening": False, "key_channel": False}
    try:
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
        listening = True
    except OSError:
        listening = False
    return {
        "proxy": proxy.url(),
        "listening": listening,
        "key_channel": key_socket().exists(),
        "health": _dataplane_health(proxy.url()) if listening else None,
    }


def _dataplane_health(proxy_url: str) -> dict[str, Any]:
    """The data plane's own report (http://aileron.proxy/healthz through the proxy): is the audit flowing?"""
    import httpx

    headers = {}
    try:  # the full report is for the operator: the service token `aileron service` keeps in AILERON_HOME
        headers["Authorization"] = "Bearer " + (state.home() / "dataplane" / "service-token").read_text().strip()
    except OSError:
        pass  # another user's or another machine's data plane: its status alone
    try:
        with httpx.Client(proxy=proxy_url, timeout=3, trust_env=False) as client:
            response = client.get("http://aileron.proxy/healthz", headers=headers)
        report: Any = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"status": "unknown", "error": f"no health report from the proxy ({exc.__class__.__name__})"}
    if not isinstance(report, dict) or not isinstance(report.get("audit"), dict):
        return {"status": "unknown", "error": f"no health report from the proxy ({response.status_code})"}
    return report


def _audit_line(health: dict[str, Any]) -> str:
    """One line on the data plane's audit spool: flowing, or what stalls it since when."""
    audit = health.get("audit")
    if not isinstance(audit, dict):
        return str(health.get("error", "unknown"))
    if "writer" not in audit:  # the status alone: this user cannot read the data plane's service token
        return f"{audit.get('status', 'unknown')} (details need the data plane's service token)"
    writer, shipper = audit["writer"], audit["shipper"]
    queued = f"{audit['queued_records']} record(s) queued"
    last = f"last shipped {shipper['last_success_at'] or 'never (since start)'}"
    if audit["status"] == "ok":
        return f"ok: {queued}, {last}"
    problems = []
    if writer["state"] != "ok":
        since = f" since {writer['failing_since']}" if writer.get("failing_since") else ""
        problems.append(f"spool writer {writer['state']}{since}: {writer.get('last_error') or 'stopped'}")
    if shipper["state"] not in ("idle", "shipping"):
        failures = shipper["consecutive_failures"]
        problems.append(f"shipper {shipper['state']} ({failures} failure(s)): {shipper.get('last_error') or 'stopped'}")
    if shipper.get("cursor_error"):
        problems.append(f"cannot save the shipping cursor: {shipper['cursor_error']}")
    if writer.get("dropped_records"):
        problems.append(f"{writer['dropped_records']} record(s) dropped")
    return f"STALLED: {'; '.join(problems)}; {queued}, {last}"


@click.command()
@click.option("--org", "org_ref", default=None, help="Organization slug or id [default: your first].")
@click.option("--server", default=None, help=f"Aileron service URL [default: {state.DEFAULT_SERVER}].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def login(org_ref: str | None, server: str | None, as_json: bool) -> None:
    """Log in with a personal access token (e.g. one an operator created), and set up your keys if needed.

    The token comes from AILERON_LOGIN_TOKEN, stdin or a hidden prompt, never the command line.
    """
    if state.login_load() is not None:
        raise CliError(f"already logged in ({state.login_path()}); use another AILERON_HOME or move that file away")
    url = state.server_url(server)
    warn_if_cleartext(url)
    token = read_token("AILERON_LOGIN_TOKEN", "Personal access token: ")
    with ApiClient(url, token=token) as api:
        who = api.get("/api/v1/whoami/")
    if who["kind"] != "pat":
        raise CliError("that is not a personal access token")
    memberships = who.get("memberships") or []
    chosen = [m for m in memberships if org_ref in (None, m["slug"], m["organization"])]
    if not chosen:
        raise CliError(f"you are not a member of {org_ref!r}" if org_ref else "you belong to no organization yet")
    session = state.Login(
        server=url, token=token, email=who["user"]["email"], organization_id=chosen[0]["organization"]
    )
    path = state.login_save(session)
    personal = set_up_keys(session, None)
    if as_json:
        emit_json(
            {
                "server": url,
                "user": who["user"],
                "organization": chosen[0],
                "login_file": str(path),
                "personal_vault": personal,
            }
        )
        return
    console.print(f"Logged in as {who['user']['email']} in {chosen[0]['slug']}; token stored in {path}")


@click.command()
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice(["owner", "admin", "approver", "member", "auditor"]),
    default="member",
    show_default=True,
)
@click.option("--team", "teams", multiple=True, help="A team they join with it (slug or name); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def invite(email: str, role: str, teams: tuple[str, ...], as_json: bool) -> None:
    """Invite EMAIL to your organization (and teams); give them the printed secret for `aileron join`."""
    login = require_login()
    org = current_org()
    with logged_in_api() as api:
        team_ids = [team_find(api, org, ref)["id"] for ref in teams]
        created = api.post(f"/api/v1/orgs/{org}/invitations/", {"email": email, "role": role, "teams": team_ids})
    if as_json:
        emit_json(created)
        return
    joins = f", joining {', '.join(created['teams'])}" if created.get("teams") else ""
    console.print(
        f"Invited {created['email']} as {created['role']}{joins} (expires {created['expires_at'][:10]}).",
        markup=False,
    )
    console.print(f"They run `aileron join --server {login.server}` and paste this secret: {created['token']}")
