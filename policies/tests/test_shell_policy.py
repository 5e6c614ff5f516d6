"""The organization's shell policy: read by members, set by admins, validated, and given to the data plane."""

from __future__ import annotations

from typing import Any

import pytest
from django_scopes import scope

from conftest import Cast, client_for
from policies import services as policy_services
from policies.shell_rules import MAX_PATTERN_CHARS, MAX_PATTERNS
from tenants import services

pytestmark = pytest.mark.django_db
DENY = {"mode": "enforce", "deny": ["rm -rf *", "curl *"], "allow": []}


def url(cast: Cast) -> str:
    return f"/api/v1/orgs/{cast.alice.org.pk}/shell-policy/"


def put(cast: Cast, body: dict[str, Any], token: str | None = None) -> Any:
    return client_for(token or cast.alice.token).put(url(cast), body, format="json")


def test_it_lists_nothing_until_an_admin_sets_it(cast: Cast) -> None:
    response = client_for(cast.bob.token).get(url(cast))
    assert response.status_code == 200, response.content
    body = response.json()
    assert {k: body[k] for k in ("mode", "deny", "allow", "record_allowed")} == {
        "mode": "enforce",
        "deny": [],
        "allow": [],
        "record_allowed": False,
    }


def test_an_owner_sets_it_and_a_member_reads_it(cast: Cast) -> None:
    saved = put(cast, {**DENY, "deny": ["rm -rf *", "curl *", "rm -rf *"], "record_allowed": True})
    assert saved.status_code == 200, saved.content
    assert saved.json()["deny"] == ["rm -rf *", "curl *"]  # kept in order, the duplicate dropped
    read = client_for(cast.bob.token).get(url(cast)).json()
    assert read["deny"] == ["rm -rf *", "curl *"] and read["record_allowed"] is True


def test_a_member_may_not_change_it(cast: Cast) -> None:
    refused = put(cast, DENY, token=cast.bob.token)
    assert refused.status_code == 403
    assert refused["Content-Type"] == "application/problem+json"
    assert client_for(cast.bob.token).get(url(cast)).json()["deny"] == []


def test_another_organization_gets_404_for_reading_and_writing(cast: Cast) -> None:
    assert put(cast, DENY).status_code == 200
    charlie = client_for(cast.charlie.token)
    for response in (charlie.get(url(cast)), charlie.put(url(cast), {"mode": "audit"}, format="json")):
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"
    assert client_for(cast.alice.token).get(url(cast)).json()["mode"] == "enforce"


@pytest.mark.parametrize(
    ("body", "pointer", "words"),
    [
        ({"mode": "enforce", "deny": ["ok *", ""]}, "/deny/1", "empty"),
        ({"mode": "enforce", "deny": ["   "]}, "/deny/0", "empty"),
        ({"mode": "enforce", "allow": ["git *", "x" * (MAX_PATTERN_CHARS + 1)]}, "/allow/1", "at most"),
        ({"mode": "enforce", "deny": ["rm -rf *\nls"]}, "/deny/0", "U+000A"),
        ({"mode": "enforce", "deny": ["rm\x1b[0m *"]}, "/deny/0", "U+001B"),
        ({"mode": "enforce", "deny": ["rm\u202e *"]}, "/deny/0", "U+202E"),
        ({"mode": "enforce", "deny": [" rm *"]}, "/deny/0", "starts or ends with a space"),
        ({"mode": "block"}, "/mode", "choice"),
        ({"mode": "enforce", "deny": [f"p{i}" for i in range(MAX_PATTERNS + 1)]}, "/deny", "no more than"),
    ],
)
def test_bad_patterns_are_refused_with_a_problem_naming_the_field(
    cast: Cast, body: dict[str, Any], pointer: str, words: str
) -> None:
    response = put(cast, body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["pointer"] == pointer
    assert words in (problem["detail"] + " ".join(e["detail"] for e in problem["errors"]))
    assert client_for(cast.alice.token).get(url(cast)).json()["deny"] == []


def test_the_data_planes_session_context_carries_it(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        session = services.session_token_create(membership=cast.alice.membership, name="claude")
        policy_services.shell_policy_set(
            acting=cast.alice.membership, mode="audit", deny=["curl *"], allow=["git *"], record_allowed=True
        )
    service = services.service_token_create(name="data plane").plaintext
    body = (
        client_for(service)
        .post("/api/v1/dataplane/sessions/context/", {"session_token": session.plaintext}, format="json")
        .json()
    )
    assert body["shell_policy"] == {"mode": "audit", "deny": ["curl *"], "allow": ["git *"], "record_allowed": True}


def test_a_session_of_an_organization_without_one_gets_the_empty_policy(cast: Cast) -> None:
    with scope(organization=cast.charlie.org):
        session = services.session_token_create(membership=cast.charlie.membership, name="claude")
    service = services.service_token_create(name="data plane").plaintext
    body = (
        client_for(service)
        .post("/api/v1/dataplane/sessions/context/", {"session_token": session.plaintext}, format="json")
        .json()
    )
    assert body["shell_policy"] == {"mode": "enforce", "deny": [], "allow": [], "record_allowed": False}
