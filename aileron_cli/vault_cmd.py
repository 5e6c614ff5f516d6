"""`aileron vault` and `aileron secret`: vaults and the credentials in them, encrypted on this machine."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from aileron_cli.common import (
    console,
    emit_json,
    err_console,
    fail_cleanly,
    logged_in_api,
    project_id_of,
    vault_client,
)
from aileron_cli.team_cmd import team_find
from aileron_cli.vaultops import VaultClient, read_secret_value
from vaults import crypto


@click.group()
def vault() -> None:
    """Vaults: list, create, grant, revoke, rotate. Keys never leave this machine unencrypted."""


@vault.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_list(as_json: bool) -> None:
    """Your vaults (and, for admins and auditors, every vault's metadata); shows pending rotations."""
    with logged_in_api() as api:
        vaults = vault_client(api).vaults()
    if as_json:
        emit_json(vaults)
        return
    table = Table(title="Vaults", title_justify="left")
    for column in ("name", "type", "your role", "members", "waiting", "key version", "rotation"):
        table.add_column(column)
    for v in vaults:
        pending = v["rotation_pending"]
        kind = f"team {v['team']}" if v.get("team") else v["type"]
        table.add_row(
            v["name"],
            kind,
            v["my_role"] or ("waiting for an owner to confirm you" if v.get("i_wait") else "-"),
            str(len(v["members"])),
            ", ".join(w["email"] for w in v.get("waiting", [])) or "-",
            str(v["key_version"]),
            f"PENDING since {pending['requested_at'][:19]}" if pending else "-",
        )
    console.print(table)
    rotating = [v["name"] for v in vaults if v["rotation_pending"]]
    if rotating:
        err_console.print(f"{len(rotating)} vault(s) await key rotation: run `aileron vault rotate NAME` as an owner.")
    to_confirm = [v["name"] for v in vaults if v["my_role"] == "owner" and v.get("waiting")]
    if to_confirm:
        err_console.print(f"People wait for {', '.join(to_confirm)}: run `aileron vault confirm`.")


@vault.command("create")
@click.argument("name")
@click.option("--team", "team_ref", default=None, help="A team vault: the team's members read it, now and later.")
@click.option("--project", "project_slug", default=None, help="A project vault: it serves that project's sessions.")
@click.option(
    "--manual-confirm",
    is_flag=True,
    help="Team vaults: let people who join the team in only by `aileron vault confirm` (else automatically).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_create(
    name: str, team_ref: str | None, project_slug: str | None, manual_confirm: bool, as_json: bool
) -> None:
    """Create a shared vault with you as owner (with --team, a team vault; with --project, a project vault)."""
    with logged_in_api() as api:
        client = vault_client(api)
        team = team_find(api, client.me.organization_id, team_ref) if team_ref else None
        project = project_id_of(api, client.me.organization_id, project_slug)
        created = client.create_vault(
            name, "shared", team_id=team["id"] if team else None, project_id=project, auto_confirm=not manual_confirm
        )
        confirmed = client.confirm_waiting([created]) if created.get("waiting") else []
        client.close()
    if as_json:
        emit_json({**created, "confirmed": confirmed})
        return
    console.print(f"Created vault {created['name']} ({created['id']}).", markup=False)
    if team is not None:
        done = [c["email"] for c in confirmed if c["confirmed"]]
        console.print(
            f"Team vault of {team['name']}: "
            + (f"confirmed {', '.join(done)}; " if done else "")
            + "whoever joins the team later is confirmed by an owner's CLI or session.",
            markup=False,
        )
        for c in confirmed:
            if not c["confirmed"]:
                err_console.print(f"aileron: {c['email']} waits: {c['error']}", markup=False)


@vault.command("confirm")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_confirm(as_json: bool) -> None:
    """Let in everyone waiting for a team vault you own: its key is wrapped to them here."""
    with logged_in_api() as api:
        client = vault_client(api)
        try:
            done = client.confirm_waiting()
        finally:
            client.close()
    if as_json:
        emit_json(done)
        return
    if not done:
        console.print("Nobody waits for a vault you own.")
    for entry in done:
        if entry["confirmed"]:
            console.print(f"Confirmed {entry['email']} in {entry['vault']}.", markup=False)
        else:
            err_console.print(f"aileron: {entry['email']} still waits for {entry['vault']}: {entry['error']}")
    if any(not e["confirmed"] for e in done):
        sys.exit(1)


@vault.command("grant")
@click.argument("vault_ref", metavar="VAULT")
@click.argument("email")
@click.option("--role", type=click.Choice(["owner", "contributor", "reader"]), default="reader", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def vault_grant(vault_ref: str, email: str, role: str, as_json: bool) -> None:
    """Give EMAIL access to VAULT: its key is re-wrapped for them here; no credential is touched."""
    with logged_in_api() as api:
        client = vault_client(api)
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
    with logged_in_api() as api:
        client = vault_client(api)
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
    with logged_in_api() as api:
        client = vault_client(api)
        try:
            result = _rotate_with_progress(client, client.find(vault_ref))
        finally:
            client.close()
    if as_json:
        emit_json(result)
    else:
        console.print(f"Rotated {result['name']} to key version {result['key_version']}.")


@click.group()
def secret() -> None:
    """Secrets (credentials) in your vaults. Values are encrypted here before they leave this machine."""


@secret.command("add")
@click.argument("name")
@click.option("--connector", required=True, help="The connector this credential is for (e.g. github).")
@click.option("--vault", "vault_ref", default=None, help="Vault name or id [default: your personal vault].")
@click.option(
    "--action",
    "actions",
    multiple=True,
    help="Use it only for this action (e.g. github.create-issue), where it wins over the others; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def secret_add(name: str, connector: str, vault_ref: str | None, actions: tuple[str, ...], as_json: bool) -> None:
    """Add a secret NAME. The value is read from stdin or a hidden prompt, never from the command line."""
    value = read_secret_value()
    try:
        with logged_in_api() as api:
            client = vault_client(api)
            try:
                target = client.find(vault_ref)
                created = client.add_secret(target, name, connector, value, actions)
            finally:
                client.close()
    finally:
        crypto.wipe(value)
    if as_json:
        emit_json(created)
    else:
        console.print(f"Added {name} ({connector}) to vault {target['name']}.")


@secret.command("update")
@click.argument("name")
@click.option("--vault", "vault_ref", default=None, help="Vault name or id [default: your personal vault].")
@click.option(
    "--expires",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="When this value expires (YYYY-MM-DD, UTC): the vault's owners are warned before.",
)
@click.option("--rotate-every", "rotate_every", type=click.IntRange(0, 3650), default=None, help="Days; 0 for none.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def secret_update(
    name: str, vault_ref: str | None, expires: datetime | None, rotate_every: int | None, as_json: bool
) -> None:
    """Replace the secret NAME's value (from stdin or a hidden prompt) as its next version, atomically: running
    sessions get the new value within seconds, and no request carries a mix."""
    value = read_secret_value()
    schedule: dict[str, Any] = {}
    if expires is not None:
        schedule["expires_at"] = expires.replace(tzinfo=UTC).isoformat()
    if rotate_every is not None:
        schedule["rotate_every_days"] = rotate_every
    try:
        with logged_in_api() as api:
            client = vault_client(api)
            try:
                target = client.find(vault_ref)
                updated = client.update_secret(target, name, value, schedule=schedule)
            finally:
                client.close()
    finally:
        crypto.wipe(value)
    if as_json:
        emit_json(updated)
    else:
        console.print(f"Updated {name} in vault {target['name']} to version {updated['version']}.", markup=False)


@secret.command("list")
@click.option("--vault", "vault_ref", default=None, help="Only this vault (name or id).")
@click.option("--project", "project_slug", default=None, help="Which one a session for this project would use.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def secret_list(vault_ref: str | None, project_slug: str | None, as_json: bool) -> None:
    """Secrets' metadata (names, connectors, vaults; never values) and which one your sessions use for what:
    a pinned one, then one bound to the action, then project, team, shared and personal vaults."""
    rows = []
    with logged_in_api() as api:
        client = vault_client(api)
        vaults = [client.find(vault_ref)] if vault_ref else [v for v in client.vaults() if v["my_role"]]
        for v in vaults:
            for c in client.credentials(v):
                rows.append({"vault": v["name"], "vault_id": v["id"], **c})
        org = client.me.organization_id
        project = project_id_of(api, org, project_slug)
        choice = api.get(f"/api/v1/orgs/{org}/credential-choice/", params={"project": project} if project else {})
    used: dict[str, list[str]] = {}
    for entry in choice:
        if entry["default"] is not None:
            used.setdefault(entry["default"]["credential_id"], []).append(f"{entry['connector']} (default)")
        for action, chosen in entry["actions"].items():
            used.setdefault(chosen["credential_id"], []).append(action)
    for r in rows:
        r["used_for"] = used.get(r["id"], [])
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Secrets", title_justify="left")
    for column in ("name", "connector", "vault", "version", "used for", "updated", "expires"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"],
            r["connector"],
            r["vault"],
            str(r.get("version", 1)),
            ", ".join(r["used_for"]) or "-",
            (r.get("updated_at") or r["created_at"])[:19],
            (r.get("expires_at") or "-")[:10],
        )
    console.print(table)


@secret.command("rm")
@click.argument("name")
@click.option("--vault", "vault_ref", default=None, help="Vault name or id [default: your personal vault].")
@fail_cleanly
def secret_rm(name: str, vault_ref: str | None) -> None:
    """Remove the secret NAME."""
    with logged_in_api() as api:
        client = vault_client(api)
        target = client.find(vault_ref)
        client.remove_secret(target, name)
    console.print(f"Removed {name} from vault {target['name']}.")
