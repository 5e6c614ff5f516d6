"""Entry point of the `aileron` command."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.table import Table

from aileron_cli import state
from aileron_cli.client import ApiClient, CliError
from aileron_site import __version__

P = ParamSpec("P")
R = TypeVar("R")

console = Console(highlight=False)
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
@click.option("--json", "as_json", is_flag=True, help="Print where each part listens as one JSON line.")
@fail_cleanly
def service(host: str, api_port: int, as_json: bool) -> None:
    """Run the Aileron runtime: API server, worker and scheduler, in one process group."""
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

    code = run_service(host=host, api_port=api_port, out=lambda m: err_console.print(m, markup=False), summary=summary)
    sys.exit(code)


@cli.command()
@click.option("--org", "org_name", required=True, help="Name of the new organization.")
@click.option("--email", required=True, help="Email of its first owner (you).")
@click.option("--name", default="", help="Your display name.")
@click.option("--server", default=None, help=f"Aileron service URL [default: {state.DEFAULT_SERVER}].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def init(org_name: str, email: str, name: str, server: str | None, as_json: bool) -> None:
    """Create an organization with you as its owner, and log in to it."""
    existing = state.login_load()
    url = state.server_url(server)
    if existing is not None:
        raise CliError(
            f"already logged in as {existing.email} on {existing.server} "
            f"({state.login_path()}); use another AILERON_HOME or move that file away"
        )
    with ApiClient(url) as api:
        result = api.post("/api/v1/signup/", {"organization": org_name, "email": email, "name": name})
    org = result["organization"]
    path = state.login_save(
        state.Login(server=url, token=result["token"], email=result["user"]["email"], organization_id=org["id"])
    )
    if as_json:
        emit_json(
            {
                "server": url,
                "organization": org,
                "user": result["user"],
                "role": result["role"],
                "login_file": str(path),
            }
        )
        return
    console.print(f"Created organization [bold]{org['name']}[/] ({org['slug']}) with you as owner.")
    console.print(f"Logged in as {result['user']['email']}; token stored in {path}")


@cli.command()
@click.option("--token", "invitation", required=True, help="The invitation secret (ail_inv_…) you were given.")
@click.option("--name", default="", help="Your display name (new users only).")
@click.option("--server", default=None, help=f"Aileron service URL [default: {state.DEFAULT_SERVER}].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def join(invitation: str, name: str, server: str | None, as_json: bool) -> None:
    """Join an organization with an invitation; a new user is logged in, an existing one keeps their login."""
    existing = state.login_load()
    url = state.server_url(server)
    if existing is not None and existing.server.rstrip("/") != url:
        raise CliError(f"logged in on {existing.server}, not {url}; use another AILERON_HOME to join there")
    with ApiClient(url, token=existing.token if existing else None) as api:
        result = api.post("/api/v1/invitations/accept/", {"token": invitation, "name": name})
    org = result["organization"]
    path = None
    if existing is None:
        if not result.get("token"):
            raise CliError("the server returned no login token for the new user")
        path = state.login_save(
            state.Login(server=url, token=result["token"], email=result["user"]["email"], organization_id=org["id"])
        )
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
    report = {"server": url, "reachable": True, "cli_version": __version__, "service": health, "login": who}
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
    console.print(table)


def main() -> None:
    cli(prog_name="aileron")


if __name__ == "__main__":
    main()
