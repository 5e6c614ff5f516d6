"""The people of an organization: `aileron team`, `aileron member` and `aileron invitation`, named by email."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from aileron_cli.client import ApiClient, CliError
from aileron_cli.common import console, current_org, emit_json, fail_cleanly, logged_in_api

ROLES = ("owner", "admin", "approver", "member", "auditor")
PAGE = 500  # the API's largest page


def every(api: ApiClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list, page by page."""
    items: list[dict[str, Any]] = []
    while True:
        page = api.get(path, params={**params, "limit": PAGE, "offset": len(items)})
        items.extend(page["results"])
        if not page.get("next") or not page["results"]:
            return items


def team_find(api: ApiClient, organization_id: str, ref: str) -> dict[str, Any]:
    """The team whose slug, name (any case) or id is REF, or a one-line error."""
    teams = every(api, f"/api/v1/orgs/{organization_id}/teams/")
    exact = [t for t in teams if ref in (t["slug"], t["id"])]
    if exact:
        return exact[0]
    loose = [t for t in teams if ref.casefold() in (t["name"].casefold(), t["slug"])]
    if len(loose) > 1:
        slugs = ", ".join(t["slug"] for t in loose)
        raise CliError(f"several teams are named {ref!r}: name one by its slug ({slugs})", exit_code=2)
    if loose:
        return loose[0]
    known = ", ".join(t["slug"] for t in teams[:10]) or "none yet: `aileron team create NAME`"
    raise CliError(f"no team {ref!r} in this organization (teams: {known})", exit_code=2)


def member_find(api: ApiClient, organization_id: str, email: str) -> dict[str, Any]:
    """The organization's member with this email, or a one-line error."""
    found = api.get(f"/api/v1/orgs/{organization_id}/members/", params={"email": email})["results"]
    if not found:
        raise CliError(f"{email} is not a member of this organization (`aileron member list`)", exit_code=2)
    return dict(found[0])


# --- teams ----------------------------------------------------------------------------------------------------


@click.group()
def team() -> None:
    """Teams: who gets which connectors (and, with team vaults, which credentials)."""


@team.command("create")
@click.argument("name")
@click.option("--slug", default=None, help="Its short name in commands [default: from NAME].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def team_create(name: str, slug: str | None, as_json: bool) -> None:
    """Create the team NAME."""
    org = current_org()
    with logged_in_api() as api:
        created = api.post(f"/api/v1/orgs/{org}/teams/", {"name": name, **({"slug": slug} if slug else {})})
    if as_json:
        emit_json(created)
        return
    console.print(f"Created team {created['name']} ({created['slug']}).", markup=False)


@team.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def team_list(as_json: bool) -> None:
    """The organization's teams, their members and the connectors enabled for them."""
    org = current_org()
    with logged_in_api() as api:
        teams = every(api, f"/api/v1/orgs/{org}/teams/")
        connectors = api.get(f"/api/v1/orgs/{org}/connectors/")
        for t in teams:
            t["members"] = [m["user"]["email"] for m in every(api, f"/api/v1/orgs/{org}/teams/{t['id']}/members/")]
            t["connectors"] = sorted(c["name"] for c in connectors if t["id"] in c["teams"])
    if as_json:
        emit_json(teams)
        return
    if not teams:
        console.print("No teams yet: `aileron team create NAME`.")
        return
    table = Table(title="Teams", title_justify="left")
    for column in ("slug", "name", "members", "connectors"):
        table.add_column(column)
    for t in teams:
        table.add_row(t["slug"], t["name"], ", ".join(t["members"]) or "-", ", ".join(t["connectors"]) or "-")
    console.print(table)


@team.command("add")
@click.argument("team_ref", metavar="TEAM")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def team_add(team_ref: str, email: str, as_json: bool) -> None:
    """Add the member EMAIL to TEAM (its slug or name)."""
    org = current_org()
    with logged_in_api() as api:
        found = team_find(api, org, team_ref)
        added = api.post(f"/api/v1/orgs/{org}/teams/{found['id']}/members/", {"email": email})
    if as_json:
        emit_json({"team": found, **added})
        return
    console.print(f"Added {added['user']['email']} to {found['name']}.", markup=False)


@team.command("remove")
@click.argument("team_ref", metavar="TEAM")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def team_remove(team_ref: str, email: str, as_json: bool) -> None:
    """Take EMAIL out of TEAM: its connectors no longer reach them."""
    org = current_org()
    with logged_in_api() as api:
        found = team_find(api, org, team_ref)
        member = member_find(api, org, email)
        api.delete(f"/api/v1/orgs/{org}/teams/{found['id']}/members/{member['user']['id']}/")
    if as_json:
        emit_json({"team": found, "removed": member["user"]})
        return
    console.print(f"Removed {member['user']['email']} from {found['name']}.", markup=False)


# --- members --------------------------------------------------------------------------------------------------


@click.group()
def member() -> None:
    """The organization's members and their roles."""


@member.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def member_list(as_json: bool) -> None:
    """Every member, with their role and whether their keys are set up."""
    org = current_org()
    with logged_in_api() as api:
        members = every(api, f"/api/v1/orgs/{org}/members/")
    if as_json:
        emit_json(members)
        return
    table = Table(title="Members", title_justify="left")
    for column in ("email", "name", "role", "keys", "since"):
        table.add_column(column)
    for m in members:
        keys = "yes" if m.get("public_key") else "not yet"
        table.add_row(m["user"]["email"], m["user"]["name"] or "-", m["role"], keys, m["created_at"][:10])
    console.print(table)


@member.command("role")
@click.argument("email")
@click.argument("role", type=click.Choice(ROLES))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def member_role(email: str, role: str, as_json: bool) -> None:
    """Give the member EMAIL the role ROLE."""
    org = current_org()
    with logged_in_api() as api:
        found = member_find(api, org, email)
        changed = api.patch(f"/api/v1/orgs/{org}/members/{found['id']}/", {"role": role})
    if as_json:
        emit_json(changed)
        return
    console.print(f"{changed['user']['email']} is now {changed['role']}.", markup=False)


@member.command("remove")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def member_remove(email: str, as_json: bool) -> None:
    """Remove EMAIL from the organization: their tokens stop working and the vaults they shared are rotated."""
    org = current_org()
    with logged_in_api() as api:
        found = member_find(api, org, email)
        api.delete(f"/api/v1/orgs/{org}/members/{found['id']}/")
    if as_json:
        emit_json({"removed": found["user"]})
        return
    console.print(f"Removed {found['user']['email']} from the organization.", markup=False)


# --- invitations ----------------------------------------------------------------------------------------------


@click.group()
def invitation() -> None:
    """Invitations sent with `aileron invite`: see and revoke them."""


@invitation.command("list")
@click.option("--all", "show_all", is_flag=True, help="Accepted, revoked and expired ones too.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def invitation_list(show_all: bool, as_json: bool) -> None:
    """Pending invitations (with --all, every one)."""
    org = current_org()
    with logged_in_api() as api:
        found = every(api, f"/api/v1/orgs/{org}/invitations/")
    if not show_all:
        found = [i for i in found if i["state"] == "pending"]
    if as_json:
        emit_json(found)
        return
    if not found:
        console.print("No pending invitations." if not show_all else "No invitations.")
        return
    table = Table(title="Invitations", title_justify="left")
    for column in ("email", "role", "state", "invited by", "expires"):
        table.add_column(column)
    for i in found:
        table.add_row(i["email"], i["role"], i["state"], i["invited_by"] or "-", i["expires_at"][:10])
    console.print(table)


@invitation.command("revoke")
@click.argument("ref", metavar="EMAIL|ID")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def invitation_revoke(ref: str, as_json: bool) -> None:
    """Revoke the pending invitations of EMAIL (or the one with this id): their secrets stop working."""
    org = current_org()
    with logged_in_api() as api:
        pending = [i for i in every(api, f"/api/v1/orgs/{org}/invitations/") if i["state"] == "pending"]
        chosen = [i for i in pending if i["id"] == ref or i["email"].casefold() == ref.casefold()]
        if not chosen:
            raise CliError(f"no pending invitation for {ref} (`aileron invitation list`)", exit_code=2)
        for i in chosen:
            api.delete(f"/api/v1/orgs/{org}/invitations/{i['id']}/")
    if as_json:
        emit_json({"revoked": [i["id"] for i in chosen]})
        return
    console.print(f"Revoked {len(chosen)} invitation(s) for {chosen[0]['email']}.", markup=False)
