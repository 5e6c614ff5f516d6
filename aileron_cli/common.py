"""What every command group of the `aileron` command shares: output, one-line errors, the login and the API."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from aileron_cli import state
from aileron_cli.client import ApiClient, CliError
from aileron_cli.vaultops import Identity, VaultClient, read_passphrase

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


def current_org() -> str:
    """The organization the login works in, or a one-line error."""
    org = require_login().organization_id
    if not org:
        raise CliError("no organization selected in your login; run `aileron init` or `aileron join`")
    return org


def org_identity(api: ApiClient, login: state.Login, organization_id: str | None = None) -> Identity:
    who = api.get("/api/v1/whoami/")
    org = organization_id or login.organization_id
    if not org:
        raise CliError("no organization selected in your login; run `aileron init` or `aileron join`")
    return Identity(user_id=who["user"]["id"], email=who["user"]["email"], organization_id=org)


def set_up_keys(login: state.Login, passphrase: str | None, *, organization_id: str | None = None) -> str | None:
    """Create the key pair if the user has none, and a personal vault in the organization if missing."""
    with ApiClient(login.server, token=login.token) as api:
        client = VaultClient(api, org_identity(api, login, organization_id))
        if not client.has_keys():
            client.create_keys(passphrase or read_passphrase(confirm=True))
        personal = [v for v in client.vaults() if v["type"] == "personal" and v["my_role"] == "owner"]
        if personal:
            return str(personal[0]["id"])
        return str(client.create_vault("Personal", "personal")["id"])


def vault_client(api: ApiClient) -> VaultClient:
    login = require_login()
    return VaultClient(api, org_identity(api, login))


def logged_in_api() -> ApiClient:
    login = require_login()
    return ApiClient(login.server, token=login.token)


def key_socket() -> Path:
    return state.home() / "run" / "credentials.sock"


def warn_line(line: str) -> None:
    err_console.print(line, markup=False)


def warn_if_cleartext(url: str) -> None:
    """A token sent to a server on another machine over plain HTTP can be read on the way: say so, once."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = (parts.hostname or "").strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if parts.scheme == "http" and not loopback:
        warn_line(f"aileron: warning: {url} is plain HTTP: your token crosses the network unencrypted (use https://)")


def installed_connectors() -> list[Any]:
    from connectors.package import ConnectorError
    from connectors.registry import installed

    try:
        return installed(state.home())
    except ConnectorError as exc:
        raise CliError(f"a connector package is invalid: {exc}") from None


DEFAULT_PROXY = "127.0.0.1:8480"


def server_proxy(api: ApiClient) -> str | None:
    """HOST:PORT of the data plane's proxy as the service says (its health report), or None if it does not."""
    try:
        found = api.get("/api/v1/health/").get("proxy")
    except (CliError, AttributeError):
        return None
    return found if isinstance(found, str) and found else None


CREDENTIAL_HELP = "Pin this credential (NAME, or VAULT/NAME) for its connector; repeatable (`aileron secret list`)."


def pinned_credentials(api: ApiClient, identity: Identity, refs: tuple[str, ...]) -> list[str]:
    """The ids of the credentials REFS name (NAME, or VAULT/NAME when names repeat), or a one-line error."""
    if not refs:
        return []
    client = VaultClient(api, identity)
    mine = [v for v in client.vaults() if v["my_role"] is not None]
    listed = [(v, {**c, "vault_id": v["id"]}) for v in mine for c in client.credentials(v)]
    ids = []
    for ref in refs:
        vault_name, _, name = ref.rpartition("/")
        found = [c for v, c in listed if c["name"] == name and vault_name in ("", v["name"], v["id"])]
        if not found:
            raise CliError(f"no credential {ref!r} in your vaults (`aileron secret list`)", exit_code=2)
        if len(found) > 1:
            raise CliError(f"several credentials are named {name!r}: say which as VAULT/{name}", exit_code=2)
        ids.append(f"{found[0]['vault_id']}:{found[0]['id']}")
    return ids


def project_id_of(api: ApiClient, organization_id: str, slug: str | None) -> str | None:
    """The id of the organization's project SLUG (None for no slug), or a one-line error."""
    if not slug:
        return None
    found = api.get(f"/api/v1/orgs/{organization_id}/projects/", params={"slug": slug})
    results = found.get("results", []) if isinstance(found, dict) else []
    if not results:
        raise CliError(f"no project {slug!r} in this organization (its admins create projects)", exit_code=2)
    return str(results[0]["id"])


PROJECT_HELP = "The organization's project (its slug) the session works for: attribution and its own TCP rules."
