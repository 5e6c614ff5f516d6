"""Entry point of the `aileron` command."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.table import Table

from aileron_cli import state
from aileron_cli.approval_cmd import approval
from aileron_cli.audit_cmd import audit
from aileron_cli.client import ApiClient, CliError
from aileron_cli.sandbox_cmd import sandbox
from aileron_cli.vaultops import Identity, VaultClient, read_passphrase, read_secret_value, read_token
from aileron_site import __version__
from vaults import crypto

P = ParamSpec("P")
R = TypeVar("R")

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail_cleanly[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    """Report CliError and state errors as one line on stderr with a non-zero exit, never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CliError as exc:
            err_console.print(f"aileron: {exc}", markup=False)
            sys.exit(exc.exit_code)
        except state.StateError as exc:
            err_console.print(f"aileron: {exc}", markup=False)
            sys.exit(1)

    return wrapper


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def require_login() -> state.Login:
    login = state.login_load()
    if login is None:
        raise CliError(f"not logged in: run `aileron init` (no login in {state.login_path()})")
    return login


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aileron")
def cli() -> None:
    """Aileron: identity, policy, approvals, audit and a bounded sandbox for every AI agent."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--api-port",
    default=8400,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port of the REST API (HTTP and websockets).",
)
@click.option(
    "--proxy-port",
    default=8480,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port of the data plane's HTTPS proxy (the agents' HTTPS_PROXY).",
)
@click.option(
    "--proxy-workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Proxy processes sharing the proxy port (the proxy scales with traffic; use about one per core).",
)
@click.option("--json", "as_json", is_flag=True, help="Print where each part listens as one JSON line.")
@fail_cleanly
def service(host: str, api_port: int, proxy_port: int, proxy_workers: int, as_json: bool) -> None:
    """Run the Aileron runtime: API server, worker, scheduler and data plane, in one process group."""
    from aileron_cli.service import run_service

    def summary(info: dict[str, str]) -> None:
        if as_json:
            click.echo(json.dumps({"version": __version__, **info}, sort_keys=True), nl=True)
            sys.stdout.flush()
            return
        table = Table(title=f"Aileron {__version__} is running", show_header=False, title_justify="left")
        for key, value in info.items():
            table.add_row(key, value)
        console.print(table)
        console.print("Press Ctrl-C to stop.")

    code = run_service(
        host=host,
        api_port=api_port,
        proxy_port=proxy_port,
        proxy_workers=proxy_workers,
        out=lambda m: err_console.print(m, markup=False),
        summary=summary,
    )
    sys.exit(code)


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.pass_context
def dataplane(ctx: click.Context) -> None:
    """Run the data plane alone (proxy, credential service, audit spool); `aileron dataplane --help` for flags."""
    from dataplane.server import main as dataplane_main

    sys.exit(dataplane_main(list(ctx.args)))


@cli.command()
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
    personal = _set_up_keys(login, passphrase)
    if as_json:
        emit_json(
            {
                "server": url,
                "organization": org,
                "user": result["user"],
                "role": result["role"],
                "login_file": str(path),
                "personal_vault": personal,
            }
        )
        return
    console.print(f"Created organization [bold]{org['name']}[/] ({org['slug']}) with you as owner.")
    console.print(f"Logged in as {result['user']['email']}; token stored in {path}")
    console.print("Your key pair is set up, sealed under your passphrase, with a personal vault.")


@cli.command()
@click.option("--name", default="", help="Your display name (new users only).")
@click.option("--server", default=None, help=f"Aileron service URL [default: {state.DEFAULT_SERVER}].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def join(name: str, server: str | None, as_json: bool) -> None:
    """Join an organization with an invitation secret (from AILERON_INVITATION, stdin or a hidden prompt)."""
    existing = state.login_load()
    url = state.server_url(server)
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
    _set_up_keys(login, passphrase, organization_id=org["id"])
    if as_json:
        emit_json(
            {
                "server": url,
                "organization": org,
                "user": result["user"],
                "role": result["role"],
                "login_file": str(path or state.login_path()),
            }
        )
        return
    console.print(f"Joined [bold]{org['name']}[/] ({org['slug']}) as {result['role']}.")
    if path is not None:
        console.print(f"Logged in as {result['user']['email']}; token stored in {path}")


@cli.command()
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
    report = {
        "server": url,
        "reachable": True,
        "cli_version": __version__,
        "service": health,
        "login": who,
        "dataplane": _dataplane_probe(),
        "sessions": live_sessions(),
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
        + (", key channel ready" if probe["key_channel"] else ", no local key channel"),
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
    console.print(table)


def _dataplane_probe() -> dict[str, Any]:
    """Whether the data plane's proxy answers on AILERON_PROXY and its key channel exists here."""
    import socket

    from aileron_cli.launch import Proxy

    try:
        proxy = Proxy.parse(os.environ.get("AILERON_PROXY", "127.0.0.1:8480"))
    except CliError:
        return {"proxy": os.environ.get("AILERON_PROXY"), "listening": False, "key_channel": False}
    try:
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
        listening = True
    except OSError:
        listening = False
    return {
        "proxy": proxy.url(),
        "listening": listening,
        "key_channel": _key_socket().exists(),
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


def _identity(api: ApiClient, login: state.Login, organization_id: str | None = None) -> Identity:
    who = api.get("/api/v1/whoami/")
    org = organization_id or login.organization_id
    if not org:
        raise CliError("no organization selected in your login; run `aileron init` or `aileron join`")
    return Identity(user_id=who["user"]["id"], email=who["user"]["email"], organization_id=org)


def _set_up_keys(login: state.Login, passphrase: str | None, *, organization_id: str | None = None) -> str | None:
    """Create the key pair if the user has none, and a personal vault in the organization if missing."""
    with ApiClient(login.server, token=login.token) as api:
        client = VaultClient(api, _identity(api, login, organization_id))
        if not client.has_keys():
            client.create_keys(passphrase or read_passphrase(confirm=True))
        personal = [v for v in client.vaults() if v["type"] == "personal" and v["my_role"] == "owner"]
        if personal:
            return str(personal[0]["id"])
        return str(client.create_vault("Personal", "personal")["id"])


def _vault_client(api: ApiClient) -> VaultClient:
    login = require_login()
    return VaultClient(api, _identity(api, login))


def _logged_in_api() -> ApiClient:
    login = require_login()
    return ApiClient(login.server, token=login.token)


@cli.command()
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
    personal = _set_up_keys(session, None)
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


@cli.command()
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice(["owner", "admin", "approver", "member", "auditor"]),
    default="member",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def invite(email: str, role: str, as_json: bool) -> None:
    """Invite EMAIL to your organization; give them the printed secret for `aileron join`."""
    login = require_login()
    with _logged_in_api() as api:
        created = api.post(f"/api/v1/orgs/{login.organization_id}/invitations/", {"email": email, "role": role})
    if as_json:
        emit_json(created)
        return
    console.print(f"Invited {created['email']} as {created['role']} (expires {created['expires_at'][:10]}).")
    console.print(f"They run `aileron join --server {login.server}` and paste this secret: {created['token']}")


@cli.group()
def vault() -> None:
    """Vaults: list, create, grant, revoke, rotate. Keys never leave this machine unencrypted."""


@vault.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_list(as_json: bool) -> None:
    """Your vaults (and, for admins and auditors, every vault's metadata); shows pending rotations."""
    with _logged_in_api() as api:
        vaults = _vault_client(api).vaults()
    if as_json:
        emit_json(vaults)
        return
    table = Table(title="Vaults", title_justify="left")
    for column in ("name", "type", "your role", "members", "key version", "rotation"):
        table.add_column(column)
    for v in vaults:
        pending = v["rotation_pending"]
        table.add_row(
            v["name"],
            v["type"],
            v["my_role"] or "-",
            str(len(v["members"])),
            str(v["key_version"]),
            f"PENDING since {pending['requested_at'][:19]}" if pending else "-",
        )
    console.print(table)
    waiting = [v["name"] for v in vaults if v["rotation_pending"]]
    if waiting:
        err_console.print(f"{len(waiting)} vault(s) await key rotation: run `aileron vault rotate NAME` as an owner.")


@vault.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_create(name: str, as_json: bool) -> None:
    """Create a shared vault with you as owner."""
    with _logged_in_api() as api:
        created = _vault_client(api).create_vault(name, "shared")
    if as_json:
        emit_json(created)
    else:
        console.print(f"Created vault {created['name']} ({created['id']}).")


@vault.command("grant")
@click.argument("vault_ref", metavar="VAULT")
@click.argument("email")
@click.option("--role", type=click.Choice(["owner", "contributor", "reader"]), default="reader", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_grant(vault_ref: str, email: str, role: str, as_json: bool) -> None:
    """Give EMAIL access to VAULT: its key is re-wrapped for them here; no credential is touched."""
    with _logged_in_api() as api:
        client = _vault_client(api)
        try:
            result = client.grant(client.find(vault_ref), email, role)
        finally:
            client.close()
    if as_json:
        emit_json(result)
    else:
        console.print(f"Granted {email} {role} access to {result['name']}.")


def _rotate_with_progress(client: VaultClient, target: dict[str, Any]) -> dict[str, Any]:
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task(f"rotating {target['name']}", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return client.rotate(target, progress=tick)


@vault.command("revoke")
@click.argument("vault_ref", metavar="VAULT")
@click.argument("email")
@click.option("--no-rotate", is_flag=True, help="Only revoke; leave the key rotation pending.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_revoke(vault_ref: str, email: str, no_rotate: bool, as_json: bool) -> None:
    """Remove EMAIL from VAULT, then rotate its key so they cannot read what is written later."""
    with _logged_in_api() as api:
        client = _vault_client(api)
        try:
            target = client.find(vault_ref)
            client.revoke(target, email)
            result = target if no_rotate else _rotate_with_progress(client, target)
        finally:
            client.close()
    if as_json:
        emit_json(result)
    elif no_rotate:
        console.print(f"Revoked {email}; the key rotation is pending (`aileron vault rotate {target['name']}`).")
    else:
        console.print(f"Revoked {email} and rotated {target['name']} to key version {result['key_version']}.")


@vault.command("rotate")
@click.argument("vault_ref", metavar="VAULT")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_rotate(vault_ref: str, as_json: bool) -> None:
    """Re-encrypt every credential in VAULT under a new key, wrapped for each remaining member."""
    with _logged_in_api() as api:
        client = _vault_client(api)
        try:
            result = _rotate_with_progress(client, client.find(vault_ref))
        finally:
            client.close()
    if as_json:
        emit_json(result)
    else:
        console.print(f"Rotated {result['name']} to key version {result['key_version']}.")


@cli.group()
def secret() -> None:
    """Secrets (credentials) in your vaults. Values are encrypted here before they leave this machine."""


@secret.command("add")
@click.argument("name")
@click.option("--connector", required=True, help="The connector this credential is for (e.g. github).")
@click.option("--vault", "vault_ref", default=None, help="Vault name or id [default: your personal vault].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def secret_add(name: str, connector: str, vault_ref: str | None, as_json: bool) -> None:
    """Add a secret NAME. The value is read from stdin or a hidden prompt, never from the command line."""
    value = read_secret_value()
    try:
        with _logged_in_api() as api:
            client = _vault_client(api)
            try:
                target = client.find(vault_ref)
                created = client.add_secret(target, name, connector, value)
            finally:
                client.close()
    finally:
        crypto.wipe(value)
    if as_json:
        emit_json(created)
    else:
        console.print(f"Added {name} ({connector}) to vault {target['name']}.")


@secret.command("list")
@click.option("--vault", "vault_ref", default=None, help="Only this vault (name or id).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def secret_list(vault_ref: str | None, as_json: bool) -> None:
    """Secrets' metadata (names, connectors, vaults); never their values."""
    rows = []
    with _logged_in_api() as api:
        client = _vault_client(api)
        vaults = [client.find(vault_ref)] if vault_ref else [v for v in client.vaults() if v["my_role"]]
        for v in vaults:
            for c in client.credentials(v):
                rows.append({"vault": v["name"], "vault_id": v["id"], **c})
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Secrets", title_justify="left")
    for column in ("name", "connector", "vault", "created"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["connector"], r["vault"], r["created_at"][:19])
    console.print(table)


@secret.command("rm")
@click.argument("name")
@click.option("--vault", "vault_ref", default=None, help="Vault name or id [default: your personal vault].")
@fail_cleanly
def secret_rm(name: str, vault_ref: str | None) -> None:
    """Remove the secret NAME."""
    with _logged_in_api() as api:
        client = _vault_client(api)
        target = client.find(vault_ref)
        client.remove_secret(target, name)
    console.print(f"Removed {name} from vault {target['name']}.")


@cli.group()
def session() -> None:
    """Agent sessions: a narrow token for the agent, and your unlocked keys held by the credential service."""


def _key_socket() -> Path:
    return state.home() / "run" / "credentials.sock"


PROJECT_HELP = "The organization's project (its slug) the session works for: attribution and its own TCP rules."


@session.command("start")
@click.option("--name", default="agent session", show_default=True, help="A label for the session.")
@click.option("--minutes", type=click.IntRange(1, 1440), default=720, show_default=True, help="Lifetime.")
@click.option("--project", "project_slug", default=None, help=PROJECT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def session_start(name: str, minutes: int, project_slug: str | None, as_json: bool) -> None:
    """Start a session: mint its token, check the local data plane's attestation, hand it your sealed master key."""
    from aileron_cli.sessions import session_open

    socket_path = _key_socket()
    if not socket_path.exists():
        raise CliError(f"no credential service at {socket_path} (is `aileron service` running here?)")
    login = require_login()
    passphrase = read_passphrase()
    with _logged_in_api() as api:
        identity = _identity(api, login)
        opened = session_open(
            api,
            identity,
            passphrase=passphrase,
            name=name,
            minutes=minutes,
            socket_path=socket_path,
            project_id=_project_id(api, identity.organization_id, project_slug),
        )
    if as_json:
        emit_json({"session_id": opened.session_id, "token": opened.token, "expires_at": opened.expires_at})
        return
    console.print(f"Session {opened.session_id} is unlocked until {opened.expires_at[:19]}.")
    console.print(f"For the agent: AILERON_TOKEN={opened.token}")


def _project_id(api: ApiClient, organization_id: str, slug: str | None) -> str | None:
    """The id of the organization's project SLUG (None for no slug), or a one-line error."""
    if not slug:
        return None
    found = api.get(f"/api/v1/orgs/{organization_id}/projects/", params={"slug": slug})
    results = found.get("results", []) if isinstance(found, dict) else []
    if not results:
        raise CliError(f"no project {slug!r} in this organization (its admins create projects)", exit_code=2)
    return str(results[0]["id"])


def _host_port(text: str, *, example: str, default_host: str | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep and default_host is not None:
        host = default_host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"{text!r} is not {'[ADDRESS:]PORT' if default_host else 'HOST:PORT'} (e.g. {example})", 2)
    return host, int(port)


@cli.command("tcp")
@click.argument("destination", metavar="HOST:PORT")
@click.option(
    "--listen",
    metavar="[ADDRESS:]PORT",
    default=None,
    help="Instead: listen here (loopback by default) and tunnel each connection, for clients that cannot use a "
    "ProxyCommand (`aileron tcp db.example.com:5432 --listen 5432 &`, then `psql -h 127.0.0.1`).",
)
@fail_cleanly
def tcp(destination: str, listen: str | None) -> None:
    """Relay standard input and output to HOST:PORT through the session's proxy, for raw TCP the organization
    allows as a `host:port` egress rule. Inside a sandbox, ssh uses it as its ProxyCommand (`ssh git@host`
    just works when a rule allows host:22); without a rule the proxy refuses, and this says why in one line."""
    import ipaddress

    from runtime.sandbox import relay

    host, port = _host_port(destination, example="github.com:22")
    if ":" in host and not host.startswith("["):
        destination = f"[{host}]:{port}"  # an IPv6 address, as ssh's %h gives it
    local = _host_port(listen, example="5432", default_host="127.0.0.1") if listen is not None else None
    if local is not None:
        try:
            loopback = ipaddress.ip_address(local[0].strip("[]")).is_loopback
        except ValueError:
            loopback = local[0] == "localhost"
        if not loopback:
            # Whoever reaches the port rides on this session's token: only this machine's own processes may.
            raise CliError(f"--listen takes a loopback address (127.0.0.1, ::1), not {local[0]}", exit_code=2)
        local = (local[0].strip("[]"), local[1])
    proxy_url = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or ""
    if not proxy_url:
        raise CliError("HTTPS_PROXY is not set: run this inside an aileron session (`aileron launch`)", exit_code=2)
    if local is not None:
        try:
            listener = relay.inside_listener(*local)
        except OSError as exc:
            raise CliError(f"cannot listen on {local[0]}:{local[1]}: {exc.strerror or exc}") from None
        err_console.print(f"aileron: {local[0]}:{local[1]} leads to {destination} through the proxy", markup=False)
        with contextlib.suppress(KeyboardInterrupt):
            relay.forward(listener, destination, proxy_url, report=lambda line: err_console.print(line, markup=False))
        return
    try:
        sock = relay.open_tunnel(destination, proxy_url)
    except relay.TunnelRefused as exc:
        raise CliError(str(exc)) from None
    sys.exit(relay.relay_stdio(sock))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--sandbox",
    type=click.Choice(["docker", "netns", "none"]),
    default="docker",
    show_default=True,
    help="Where the agent runs; `none` runs it on this host, unsandboxed (developer mode).",
)
@click.option(
    "--proxy",
    "proxy_text",
    envvar="AILERON_PROXY",
    default="127.0.0.1:8480",
    show_default=True,
    help="The data plane's proxy, HOST:PORT [env AILERON_PROXY].",
)
@click.option("--name", default=None, help="The agent's name in audit and approvals [default: the command].")
@click.option("--minutes", type=click.IntRange(1, 1440), default=720, show_default=True, help="Session lifetime.")
@click.option(
    "--dir",
    "project",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=".",
    help="The project: mounted at /workspace; its .devcontainer/devcontainer.json picks the image [default: .].",
)
@click.option(
    "--project",
    "project_slug",
    default=None,
    help=PROJECT_HELP + " [default: the devcontainer's customizations.aileron.project]",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@fail_cleanly
def launch(
    sandbox: str,
    proxy_text: str,
    name: str | None,
    minutes: int,
    project: Path,
    project_slug: str | None,
    command: tuple[str, ...],
) -> None:
    """Run an agent through Aileron: `aileron launch claude "fix the flaky test"`, or any command
    (`aileron launch -- ./agent.sh`). Its held requests are asked in this terminal."""
    from aileron_cli import launch as launching
    from aileron_cli.sessions import session_open

    proxy = launching.Proxy.parse(proxy_text)
    argv = list(command)
    plan = _sandbox_plan(sandbox, project.resolve()) if sandbox != "none" else None
    configured = _refuse_strict_unsandboxed(project.resolve()) if plan is None else plan.aileron_project
    if project_slug is None:
        project_slug = configured or None  # `--project ""`: none, whatever the devcontainer says
    socket_path = _key_socket()
    if not socket_path.exists():
        raise CliError(f"no data plane key channel at {socket_path} (is `aileron service` running here?)")
    login = require_login()
    passphrase = read_passphrase()
    with _logged_in_api() as api:
        identity = _identity(api, login)
        org = identity.organization_id
        project_id = _project_id(api, org, project_slug)

        def open_session() -> Any:
            return session_open(
                api,
                identity,
                passphrase=passphrase,
                name=name or Path(argv[0]).name,
                minutes=minutes,
                socket_path=socket_path,
                project_id=project_id,
            )

        def end(opened: Any) -> None:
            launching.end_session(api, org, socket_path, opened)

        def decide(approval_id: str, verb: str, reason: str) -> str:
            return _decide_here(api, org, approval_id, verb, reason)

        def follow(handle: Any) -> None:
            _follow_approvals(login, org, handle)

        def record(opened: Any, about: dict[str, Any]) -> Any:
            return _record_session(opened, argv, {**about, "project": project_slug or ""})

        warn = _warn_line
        if plan is None:
            code = launching.launch_unsandboxed(
                argv=argv,
                proxy=proxy,
                open_session=open_session,
                end_session=end,
                connectors=_connectors(),
                warn=warn,
                decide=decide,
                follow=follow,
                record=record,
            )
        else:
            from connectors.registry import manifest
            from runtime.sandbox import backends, mediation

            found = _connectors()
            policy = api.get(f"/api/v1/orgs/{org}/shell-policy/")
            if plan.mediation == "off" and isinstance(policy, dict) and policy.get("mode") == "enforce":
                warn("aileron: the organization enforces its shell policy: `mediation: off` is not applied")
                plan = replace(plan, mediation="default")
            if plan.mediation == mediation.STRICT:
                egress = api.get(f"/api/v1/orgs/{org}/egress/")
                refusal = mediation.strict_organization_refusal(egress=egress, shell_policy=policy)
                if refusal is not None:
                    raise CliError(refusal, exit_code=2)
                policy = mediation.strict_shell_policy(policy)
            code = launching.launch_sandboxed(
                plan=plan,
                backend=backends.get(plan.backend),
                argv=argv,
                proxy=proxy,
                open_session=open_session,
                end_session=end,
                connectors=found,
                manifest_json=(json.dumps(manifest(found), indent=2, sort_keys=True) + "\n").encode(),
                hint=_hint(found, sandboxed=True),
                shell_policy=policy if isinstance(policy, dict) else None,
                warn=warn,
                decide=decide,
                follow=follow,
                record=record,
            )
    sys.exit(code)


def _warn_line(line: str) -> None:
    err_console.print(line, markup=False)


def _sandbox_plan(name: str, project: Path) -> Any:
    """Read the project's devcontainer, check the backend and resolve the image before anything is unlocked:
    a one-line error otherwise. The devcontainer comes first: a bad file is the user's to fix on any machine."""
    from aileron_cli.launch import SandboxPlan
    from runtime.sandbox import backends
    from runtime.sandbox.devcontainer import load_config, resolve_image
    from runtime.sandbox.image import ImageError, base_image_tag, engine, local_image
    from runtime.sandbox.mediation import STRICT, strict_launch_refusal

    try:
        config = load_config(project)
    except ImageError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if config.mediation == STRICT:
        refusal = strict_launch_refusal(sandbox=name, tier=config.tier)
        if refusal is not None:
            raise CliError(refusal, exit_code=2)
    if config.runtime == "gvisor" and name != "docker":
        raise CliError(_gvisor_elsewhere(config.source, name), exit_code=2)
    backend = backends.get(name)
    reason = backend.available()
    if reason is not None:
        raise CliError(f"the {name} sandbox is not available here: {reason}", exit_code=2)
    try:
        if name == "docker":
            client = engine()
            if local_image(client, base_image_tag()) is None:
                raise CliError(f"the base image {base_image_tag()} is not built: run `aileron sandbox build-base`")
            if config.runtime == "gvisor":
                from runtime.sandbox.docker_backend import gvisor_unavailable

                if (why := gvisor_unavailable(client)) is not None:
                    raise CliError(why, exit_code=2)
            image = resolve_image(config, client, _warn_line).ref
        else:
            image = ""  # netns: a read-only view of this host's own system
            if config.source is not None and config.tier != "base":
                _warn_line(f"aileron: the netns sandbox uses this host's system; {config.source}'s image is for docker")
    except ImageError as exc:
        raise CliError(str(exc), exit_code=2) from None
    return SandboxPlan(
        backend=name,
        image=image,
        tier=config.tier,
        mediation=config.mediation,
        approval_surface=config.approval_surface,
        project=project,
        mcps=tuple(m.as_dict() for m in config.mcps),
        runtime=config.runtime,
        aileron_project=config.project,
    )


def _refuse_strict_unsandboxed(project: Path) -> str:
    """`--sandbox none` in a project whose devcontainer asks for strict mediation: one line, before anything.
    A devcontainer that does not load is not this mode's business: without a sandbox it is not used.
    The devcontainer's project slug ("" for none)."""
    from runtime.sandbox.devcontainer import load_config
    from runtime.sandbox.image import ImageError
    from runtime.sandbox.mediation import STRICT, strict_launch_refusal

    try:
        config = load_config(project)
    except ImageError:
        return ""
    refusal = strict_launch_refusal(sandbox="none", tier=config.tier) if config.mediation == STRICT else None
    if refusal is not None:
        raise CliError(refusal, exit_code=2)
    if config.runtime == "gvisor":
        raise CliError(_gvisor_elsewhere(config.source, "none"), exit_code=2)
    return config.project


def _gvisor_elsewhere(source: Path | None, sandbox: str) -> str:
    return (
        f'{source or "devcontainer.json"} asks for runtime "gvisor", which runs the docker sandbox under runsc; '
        f"the {sandbox} sandbox cannot (use --sandbox docker)"
    )


def _hint(found: list[Any], *, sandboxed: bool) -> str:
    """The hint; in a sandbox every connector that is not built in has a command too (contract.connector_files)."""
    from connectors.registry import is_builtin

    def has_command(c: Any) -> bool:
        if c.name in ("github", "slack", "linear", "stripe"):
            return True
        return sandboxed and c.folder is not None and not is_builtin(c)

    shims = [c.name for c in found if has_command(c)]
    return HINT.format(systems=", ".join(c.name for c in found), shims=", ".join(f"`{n}`" for n in shims))


def _sessions_dir() -> Path:
    return state.home() / "run" / "sessions"


def _record_session(opened: Any, argv: list[str], about: dict[str, Any]) -> Any:
    """A note of the live session for `aileron session info` and `aileron status` (no secret in it)."""
    folder = _sessions_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{opened.session_id}.json"
    note = {
        "session_id": opened.session_id,
        "expires_at": opened.expires_at,
        "agent": Path(argv[0]).name if argv else "",
        "command": argv[:1],
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **about,
    }
    path.write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return lambda: path.unlink(missing_ok=True)


def live_sessions() -> list[dict[str, Any]]:
    """This machine's sessions whose `aileron launch` is still running."""
    found = []
    folder = _sessions_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            note = json.loads(path.read_text(encoding="utf-8"))
            os.kill(int(note["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # its launcher is gone
            continue
        found.append(note)
    return found


@session.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_cleanly
def session_info(as_json: bool) -> None:
    """The live sessions `aileron launch` runs on this machine: agent, sandbox, image, since when."""
    sessions = live_sessions()
    if as_json:
        emit_json(sessions)
        return
    if not sessions:
        console.print("No live session on this machine.")
        return
    for s in sessions:
        console.print(
            f"{s['session_id']}  {s.get('agent', '')}  sandbox {s.get('sandbox', 'none')}"
            + (f"  project {s['project']}" if s.get("project") else "")
            + f"  image {s.get('image') or '-'}  since {s.get('started_at', '')}  until {str(s.get('expires_at'))[:19]}"
        )


def _decide_here(api: Any, organization_id: str, approval_id: str, verb: str, reason: str) -> str:
    """A decision typed in the launching terminal (aileron owns the keys; the agent never sees them)."""
    from aileron_cli.approval_cmd import decided_message

    result = api.post(f"/api/v1/orgs/{organization_id}/approvals/{approval_id}/{verb}/", {"reason": reason})
    return str(decided_message(result))


def _follow_approvals(login: state.Login, organization_id: str, handle: Any) -> None:
    from aileron_cli.approval_cmd import watch_loop, websocket_url

    url = websocket_url(login.server, organization_id)
    watch_loop(url, token=login.token, org=organization_id, handle=handle, warn=lambda _line: None)


@session.command("end")
@click.argument("session_id")
@fail_cleanly
def session_end(session_id: str) -> None:
    """End a session: the credential service wipes its keys and the token is revoked."""
    from aileron_shared import keychannel

    login = require_login()
    socket_path = _key_socket()
    wiped = False
    if socket_path.exists():
        wiped = bool(keychannel.request(socket_path, {"op": "close", "session_id": session_id}).get("closed"))
    with _logged_in_api() as api:
        api.delete(f"/api/v1/orgs/{login.organization_id}/session-tokens/{session_id}/")
    console.print(f"Session {session_id} ended; token revoked" + ("; keys wiped." if wiped else "."))


@cli.group()
def connector() -> None:
    """Connector packages: list, install a folder, import a whole OpenAPI description."""


def _connectors() -> list[Any]:
    from connectors.package import ConnectorError
    from connectors.registry import installed

    try:
        return installed(state.home())
    except ConnectorError as exc:
        raise CliError(f"a connector package is invalid: {exc}") from None


@connector.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def connector_list(as_json: bool) -> None:
    """Installed connectors and how many actions each exposes."""
    found = _connectors()
    rows = [
        {
            "name": c.name,
            "description": c.description,
            "hosts": list(c.hosts),
            "auth": c.auth.scheme,
            "actions": len(c.actions),
            "folder": str(c.folder),
        }
        for c in found
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Connectors", title_justify="left")
    for column in ("name", "hosts", "auth", "actions", "description"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], ", ".join(r["hosts"]), r["auth"], str(r["actions"]), r["description"])
    console.print(table)


@connector.command("install")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@fail_cleanly
def connector_install(folder: Path) -> None:
    """Validate a connector package FOLDER and install it under AILERON_HOME/connectors."""
    from connectors.package import ConnectorError
    from connectors.registry import install

    try:
        installed_connector = install(folder, state.home())
    except ConnectorError as exc:
        raise CliError(str(exc), exit_code=2) from None
    console.print(f"Installed {installed_connector.name} ({len(installed_connector.actions)} actions).")


@connector.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("name")
@click.pass_context
def connector_run(ctx: click.Context, name: str) -> None:
    """Run any installed connector's shim by name: `aileron connector run NAME [ACTION] [--ARG VALUE ...]`.

    The same as the `github`, `slack`, ... commands, for imported connectors too (a sandbox has a command of
    each connector's name that runs this)."""
    from connectors import shim

    sys.argv = [name, *ctx.args]  # the shim's messages name the connector, as its own command would
    shim.entry(name)


@connector.command("import")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Connector name (lowercase, dashes).")
@click.option("--host", "hosts", required=True, multiple=True, help="Upstream host; repeat for several.")
@click.option("--auth", type=click.Choice(["bearer", "header", "basic", "query"]), required=True)
@click.option("--auth-name", default=None, help="Header or query parameter name (auth header or query).")
@click.option("--placeholder", default="aileron", show_default=True, help="Placeholder key for clients.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def connector_import(
    spec: Path, name: str, hosts: tuple[str, ...], auth: str, auth_name: str | None, placeholder: str, as_json: bool
) -> None:
    """Make a connector of every operation in an OpenAPI description (reads allowed, writes need approval)."""
    from connectors.package import ConnectorError
    from connectors.registry import import_openapi

    try:
        made = import_openapi(
            spec,
            home=state.home(),
            name=name,
            hosts=list(hosts),
            auth=auth,
            auth_name=auth_name,
            placeholder=placeholder,
        )
    except ConnectorError as exc:
        raise CliError(str(exc), exit_code=2) from None
    approvals = sum(a.approval == "always" for a in made.actions)
    if as_json:
        emit_json({"name": made.name, "actions": len(made.actions), "approval_required": approvals})
        return
    console.print(f"Imported {made.name}: {len(made.actions)} actions ({approvals} need approval).")


@cli.group()
def actions() -> None:
    """Discover actions: list them, write the manifest, see what the proxy would match."""


@actions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def actions_list(as_json: bool) -> None:
    """Every action of every installed connector."""
    entries = [a.manifest_entry() for c in _connectors() for a in c.actions]
    if as_json:
        emit_json(entries)
        return
    table = Table(title="Actions", title_justify="left")
    for column in ("id", "approval", "description"):
        table.add_column(column)
    for e in entries:
        table.add_row(e["id"], e["approval"], e["description"])
    console.print(table)


@actions.command("manifest")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of stdout (sandboxes mount it at /etc/aileron/actions.json).",
)
@fail_cleanly
def actions_manifest(output: Path | None) -> None:
    """The actions manifest (JSON) generated from the installed connectors."""
    from connectors.registry import manifest

    text = json.dumps(manifest(_connectors()), indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    err_console.print(f"wrote {output} ({len(text)} bytes)")


HINT = (
    "Aileron connects you to {systems}. Call them with the shell commands {shims}: they are on PATH, hold no "
    "credentials, and Aileron adds the real credential, applies policy and records an audit entry. Every action "
    "with its arguments, idempotency and approval requirement is listed in /etc/aileron/actions.json; "
    "`<command> --help` lists a command's actions and `<command> <action> --help` its arguments. Actions marked "
    "approval-required wait for a human; if one is refused, do not retry it another way."
)


@actions.command("hint")
@fail_cleanly
def actions_hint() -> None:
    """The short system-prompt paragraph that tells an agent where Aileron's actions are."""
    click.echo(_hint(_connectors(), sandboxed=False))


@actions.command("match")
@click.argument("method")
@click.argument("url")
@click.option("--body", "body_file", type=click.File("rb"), default=None, help="Request body file ('-' for stdin).")
@click.option("--content-type", default="application/json", show_default=True, help="The body's media type.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def actions_match(method: str, url: str, body_file: Any, content_type: str, as_json: bool) -> None:
    """The actions and arguments the proxy would see for METHOD URL [BODY], or why nothing matched."""
    from urllib.parse import urlsplit

    from connectors.identify import Catalog
    from connectors.matcher import Refused

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise CliError("URL must be an https:// URL", exit_code=2)
    try:
        catalog = Catalog(_connectors())
    except ValueError as exc:
        raise CliError(f"two installed connectors claim the same operation: {exc}") from None
    body = body_file.read() if body_file is not None else b""
    result: dict[str, Any]
    try:
        found = catalog.identify(
            host=parts.netloc,
            method=method,
            path=parts.path or "/",
            query=parts.query,
            headers={"content-type": content_type} if body else {},
            body=body,
        )
    except Refused as exc:
        result = {"matched": False, "refused": True, "reason": str(exc)}
    else:
        if not found:
            result = {"matched": False, "refused": False, "reason": "no installed connector has this operation"}
        else:
            result = {
                "matched": True,
                "actions": [{"action": f.action, "arguments": f.args} for f in found],
                "path": found[0].path,
            }
    if as_json:
        emit_json(result)
    elif result["matched"]:
        for item in result["actions"]:
            console.print(f"{item['action']}  {json.dumps(item['arguments'], sort_keys=True)}", markup=False)
    else:
        console.print(("refused: " if result["refused"] else "unmatched: ") + result["reason"], markup=False)
    if not result["matched"]:
        sys.exit(1)


cli.add_command(audit)
cli.add_command(approval)
cli.add_command(sandbox)


def main() -> None:
    cli(prog_name="aileron")


if __name__ == "__main__":
    main()
