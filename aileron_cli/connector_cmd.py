"""`aileron connector` (packages, imports, the shims) and `aileron actions` (discovery)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from aileron_cli import state
from aileron_cli.client import CliError
from aileron_cli.common import (
    console,
    current_org,
    emit_json,
    err_console,
    fail_cleanly,
    installed_connectors,
    logged_in_api,
)
from aileron_cli.team_cmd import team_find


@click.group()
def connector() -> None:
    """Connector packages: list, install a folder, import a whole OpenAPI description."""


@connector.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def connector_list(as_json: bool) -> None:
    """Installed connectors and how many actions each exposes."""
    found = installed_connectors()
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


def _enablement(name: str, team_ref: str, *, enable: bool, as_json: bool) -> None:
    org = current_org()
    with logged_in_api() as api:
        team = team_find(api, org, team_ref)
        path = f"/api/v1/orgs/{org}/connectors/{name}/teams/{team['id']}/"
        result = api.put(path) if enable else api.delete(path)
    if as_json:
        emit_json({"connector": name, "team": team, "enabled": enable, **({"detail": result} if result else {})})
        return
    verb = "enabled for" if enable else "disabled for"
    console.print(f"{name} is {verb} {team['name']}.", markup=False)


@connector.command("enable")
@click.argument("name")
@click.option("--team", "team_ref", required=True, help="The team (slug or name) whose sessions may use it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def connector_enable(name: str, team_ref: str, as_json: bool) -> None:
    """Let TEAM's members' agents use the connector NAME (its credential comes from their vaults)."""
    _enablement(name, team_ref, enable=True, as_json=as_json)


@connector.command("disable")
@click.argument("name")
@click.option("--team", "team_ref", required=True, help="The team (slug or name).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def connector_disable(name: str, team_ref: str, as_json: bool) -> None:
    """Stop TEAM's agents from using the connector NAME (other teams keep it)."""
    _enablement(name, team_ref, enable=False, as_json=as_json)


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


@click.group()
def actions() -> None:
    """Discover actions: list them, write the manifest, see what the proxy would match."""


@actions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def actions_list(as_json: bool) -> None:
    """Every action of every installed connector."""
    entries = [a.manifest_entry() for c in installed_connectors() for a in c.actions]
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

    text = json.dumps(manifest(installed_connectors()), indent=2, sort_keys=True) + "\n"
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


def agent_hint(found: list[Any], *, sandboxed: bool) -> str:
    """The hint; in a sandbox every connector that is not built in has a command too (contract.connector_files)."""
    from connectors.registry import is_builtin

    def has_command(c: Any) -> bool:
        if c.name in ("github", "slack", "linear", "stripe"):
            return True
        return sandboxed and c.folder is not None and not is_builtin(c)

    shims = [c.name for c in found if has_command(c)]
    return HINT.format(systems=", ".join(c.name for c in found), shims=", ".join(f"`{n}`" for n in shims))


@actions.command("hint")
@fail_cleanly
def actions_hint() -> None:
    """The short system-prompt paragraph that tells an agent where Aileron's actions are."""
    click.echo(agent_hint(installed_connectors(), sandboxed=False))


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
        catalog = Catalog(installed_connectors())
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
