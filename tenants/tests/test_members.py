"""Membership rules: owners are protected, invitations onboard people without handing out other accounts."""

from __future__ import annotations

import pytest
from django_scopes import scope

from conftest import Cast, client_for, make_person
from tenants.models import ApiToken, Membership
from tenants.roles import Role

pytestmark = pytest.mark.django_db


def members_url(cast: Cast, member: Membership | None = None) -> str:
    base = f"/api/v1/orgs/{cast.alice.org.pk}/members/"
    return f"{base}{member.pk}/" if member else base


def test_the_last_owner_can_neither_leave_nor_be_demoted(cast: Cast) -> None:
    alice = client_for(cast.alice.token)
    assert alice.delete(members_url(cast, cast.alice.membership)).status_code == 409
    response = alice.patch(members_url(cast, cast.alice.membership), {"role": "admin"}, format="json")
    assert response.status_code == 409
    with scope(organization=cast.alice.org):
        assert Membership.objects.get(pk=cast.alice.membership.pk).role == Role.OWNER


def test_an_owner_can_hand_over_ownership_and_then_step_down(cast: Cast) -> None:
    alice = client_for(cast.alice.token)
    assert alice.patch(members_url(cast, cast.bob.membership), {"role": "owner"}, format="json").status_code == 200
    assert alice.patch(members_url(cast, cast.alice.membership), {"role": "member"}, format="json").status_code == 200


def test_an_admin_cannot_touch_an_owner_or_create_one(cast: Cast) -> None:
    admin = make_person("dana@example.com", org=cast.alice.org, role=Role.ADMIN)
    client = client_for(admin.token)
    assert client.patch(members_url(cast, cast.alice.membership), {"role": "member"}, format="json").status_code == 403
    assert client.delete(members_url(cast, cast.alice.membership)).status_code == 403
    assert client.patch(members_url(cast, cast.bob.membership), {"role": "owner"}, format="json").status_code == 403
    invite = client.post(
        f"/api/v1/orgs/{cast.alice.org.pk}/invitations/",
        {"email": "e@example.com", "role": "owner"},
        format="json",
    )
    assert invite.status_code == 403
    assert client.patch(members_url(cast, cast.bob.membership), {"role": "approver"}, format="json").status_code == 200


def test_a_member_may_leave_but_not_remove_others(cast: Cast) -> None:
    carol = make_person("carol@example.com", org=cast.alice.org, role=Role.MEMBER)
    bob = client_for(cast.bob.token)
    assert bob.delete(members_url(cast, carol.membership)).status_code == 403
    assert bob.delete(members_url(cast, cast.bob.membership)).status_code == 204
    assert bob.get(f"/api/v1/orgs/{cast.alice.org.pk}/").status_code == 404


def test_an_invitation_onboards_a_new_person_with_a_first_token(cast: Cast) -> None:
    created = (
        client_for(cast.alice.token)
        .post(
            f"/api/v1/orgs/{cast.alice.org.pk}/invitations/",
            {"email": "Erin@Example.com", "role": "approver"},
            format="json",
        )
        .json()
    )
    assert created["state"] == "pending" and created["token"].startswith("ail_inv_")
    joined = client_for(None).post(
        "/api/v1/invitations/accept/", {"token": created["token"], "name": "Erin"}, format="json"
    )
    assert joined.status_code == 201, joined.content
    body = joined.json()
    assert (body["user"]["email"], body["role"]) == ("erin@example.com", "approver")
    me = client_for(body["token"]).get(f"/api/v1/orgs/{cast.alice.org.pk}/").json()
    assert me["role"] == "approver"
    again = client_for(None).post("/api/v1/invitations/accept/", {"token": created["token"]}, format="json")
    assert again.status_code == 404


def test_an_invitation_for_an_existing_user_needs_that_users_own_login(cast: Cast) -> None:
    created = (
        client_for(cast.alice.token)
        .post(f"/api/v1/orgs/{cast.alice.org.pk}/invitations/", {"email": "charlie@example.net"}, format="json")
        .json()
    )
    tokens_before = ApiToken.objects.filter(user=cast.charlie.user).count()
    anonymous = client_for(None).post("/api/v1/invitations/accept/", {"token": created["token"]}, format="json")
    assert anonymous.status_code == 403
    as_bob = client_for(cast.bob.token).post("/api/v1/invitations/accept/", {"token": created["token"]}, format="json")
    assert as_bob.status_code == 403
    assert ApiToken.objects.filter(user=cast.charlie.user).count() == tokens_before
    accepted = client_for(cast.charlie.token).post(
        "/api/v1/invitations/accept/", {"token": created["token"]}, format="json"
    )
    assert accepted.status_code == 201
    assert accepted.json()["token"] is None
    assert client_for(cast.charlie.token).get(f"/api/v1/orgs/{cast.alice.org.pk}/").status_code == 200


def test_a_revoked_invitation_cannot_be_accepted(cast: Cast) -> None:
    alice = client_for(cast.alice.token)
    created = alice.post(
        f"/api/v1/orgs/{cast.alice.org.pk}/invitations/", {"email": "f@example.com"}, format="json"
    ).json()
    assert alice.delete(f"/api/v1/orgs/{cast.alice.org.pk}/invitations/{created['id']}/").status_code == 204
    response = client_for(None).post("/api/v1/invitations/accept/", {"token": created["token"]}, format="json")
    assert response.status_code == 404


def test_signup_refuses_an_email_that_already_has_an_account(cast: Cast) -> None:
    response = client_for(None).post(
        "/api/v1/signup/", {"organization": "Evil", "email": "ALICE@example.com"}, format="json"
    )
    assert response.status_code == 409
    assert not ApiToken.objects.filter(user=cast.alice.user, name="aileron init").count() > 1


def test_signup_is_closed_when_the_operator_closes_it(settings: object, db: object) -> None:
    settings.AILERON_OPEN_SIGNUP = False  # type: ignore[attr-defined]
    response = client_for(None).post("/api/v1/signup/", {"organization": "X", "email": "x@example.com"}, format="json")
    assert response.status_code == 403
    assert "closed" in response.json()["detail"]


def test_team_members_must_belong_to_the_organization(cast: Cast) -> None:
    alice = client_for(cast.alice.token)
    org = cast.alice.org.pk
    team = alice.post(f"/api/v1/orgs/{org}/teams/", {"name": "Platform"}, format="json").json()
    outsider = alice.post(
        f"/api/v1/orgs/{org}/teams/{team['id']}/members/",
        {"user_id": str(cast.charlie.user.pk)},
        format="json",
    )
    assert outsider.status_code == 400
    added = alice.post(
        f"/api/v1/orgs/{org}/teams/{team['id']}/members/", {"user_id": str(cast.bob.user.pk)}, format="json"
    )
    assert added.status_code == 201
    listed = alice.get(f"/api/v1/orgs/{org}/teams/{team['id']}/members/").json()
    assert [m["user"]["email"] for m in listed["results"]] == ["bob@example.com"]


def test_a_team_member_is_added_by_email_too_and_members_are_found_by_email(cast: Cast) -> None:
    alice = client_for(cast.alice.token)
    org = cast.alice.org.pk
    team = alice.post(f"/api/v1/orgs/{org}/teams/", {"name": "Support"}, format="json").json()
    url = f"/api/v1/orgs/{org}/teams/{team['id']}/members/"
    outsider = alice.post(url, {"email": "charlie@example.net"}, format="json")
    assert outsider.status_code == 400 and "charlie@example.net is not a member" in outsider.json()["detail"]
    both = alice.post(url, {"email": "bob@example.com", "user_id": str(cast.bob.user.pk)}, format="json")
    assert both.status_code == 400
    assert alice.post(url, {}, format="json").status_code == 400
    added = alice.post(url, {"email": "Bob@Example.com"}, format="json")
    assert added.status_code == 201 and added.json()["user"]["email"] == "bob@example.com"
    found = alice.get(members_url(cast), {"email": "BOB@example.com"}).json()["results"]
    assert [m["id"] for m in found] == [str(cast.bob.membership.pk)]
    assert alice.get(members_url(cast), {"email": "charlie@example.net"}).json()["results"] == []


def test_lists_paginate_filter_and_order(cast: Cast) -> None:
    alice = client_for(cast.alice.token)
    org = cast.alice.org.pk
    for name in ["Bravo", "Alpha", "Charlie"]:
        assert alice.post(f"/api/v1/orgs/{org}/projects/", {"name": name}, format="json").status_code == 201
    ordered = alice.get(f"/api/v1/orgs/{org}/projects/?ordering=name").json()
    assert [p["name"] for p in ordered["results"]] == ["Alpha", "Bravo", "Charlie"]
    page = alice.get(f"/api/v1/orgs/{org}/projects/?ordering=-name&limit=1&offset=1").json()
    assert page["count"] == 3 and [p["name"] for p in page["results"]] == ["Bravo"]
    filtered = alice.get(f"/api/v1/orgs/{org}/projects/?slug=alpha").json()
    assert [p["name"] for p in filtered["results"]] == ["Alpha"]
    members = alice.get(f"/api/v1/orgs/{org}/members/?role=member").json()
    assert [m["user"]["email"] for m in members["results"]] == ["bob@example.com"]


def test_an_operator_can_bootstrap_an_organization_when_signup_is_closed(db: object) -> None:
    import io
    import json

    from django.core.management import call_command

    out = io.StringIO()
    call_command("aileron_org_create", "--name", "Bank", "--owner-email", "ops@bank.example", "--json", stdout=out)
    result = json.loads(out.getvalue())
    me = client_for(result["token"]).get(f"/api/v1/orgs/{result['organization']['id']}/")
    assert me.status_code == 200 and me.json()["role"] == "owner"


def test_an_invitation_names_only_teams_of_its_organization(cast: Cast) -> None:
    alice, charlie = client_for(cast.alice.token), client_for(cast.charlie.token)
    org = cast.alice.org.pk
    mine = alice.post(f"/api/v1/orgs/{org}/teams/", {"name": "Support"}, format="json").json()
    theirs = charlie.post(f"/api/v1/orgs/{cast.charlie.org.pk}/teams/", {"name": "X"}, format="json").json()
    url = f"/api/v1/orgs/{org}/invitations/"
    refused = alice.post(url, {"email": "d@example.com", "teams": [mine["id"], theirs["id"]]}, format="json")
    assert refused.status_code == 400 and refused.json()["errors"][0]["pointer"] == "/teams/1", refused.content
    made = alice.post(url, {"email": "d@example.com", "teams": [mine["id"], mine["id"]]}, format="json")
    assert made.status_code == 201 and made.json()["teams"] == ["support"], made.content
    joined = client_for(None).post("/api/v1/invitations/accept/", {"token": made.json()["token"]}, format="json")
    assert joined.status_code == 201 and joined.json()["teams"] == ["support"], joined.content
    members = alice.get(f"/api/v1/orgs/{org}/teams/{mine['id']}/members/").json()["results"]
    assert [m["user"]["email"] for m in members] == ["d@example.com"]
