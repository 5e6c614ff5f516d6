"""Bad input on every write endpoint gets 400 problem+json, never a 500 and never a partial write."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django_scopes import scopes_disabled

from conftest import Cast, client_for
from tenants import services
from tenants.models import ApiToken, Invitation, Membership, Organization, Project, Team, TeamMembership
from tenants.tests.test_isolation import fill, populate
from tests.urlwalk import api_routes, methods_of

pytestmark = pytest.mark.django_db

WRONG_TYPES = {
    "name": ["x"],
    "organization": {"a": 1},
    "email": 5,
    "role": "emperor",
    "user_id": "nope",
    "token": 5,
    "slug": "bad slug!",
    "team": "nope",
    "project": "nope",
    "expires_in_days": "soon",
    "expires_in_minutes": -5,
    "description": {"a": 1},
}
BAD_BODIES: list[tuple[str, str]] = [
    ("not json", "{name: x"),
    ("json array", "[1, 2]"),
    ("json scalar", "42"),
    ("json null", "null"),
    ("nested too deep", "[" * 100_000 + "]" * 100_000),
    ("nested too deep in an object", '{"name": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}"),
    ("wrong types", json.dumps(WRONG_TYPES)),
    ("nul bytes", json.dumps({k: "a\u0000b" for k in WRONG_TYPES})),
    ("huge strings", json.dumps({k: "x" * 5000 for k in WRONG_TYPES})),
    (
        "lone surrogate",
        '{"name": "\\ud800", "email": "\\ud800", "organization": "\\ud800", "token": "\\ud800",'
        ' "role": "\\ud800", "user_id": "\\ud800"}',
    ),
]


def counts() -> dict[str, int]:
    with scopes_disabled():
        return {
            m.__name__: m.objects.count()
            for m in (Organization, Membership, Team, TeamMembership, Project, Invitation, ApiToken)
        }


def write_endpoints(ids: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for route, pattern in api_routes():
        for method in methods_of(pattern):
            if method in ("post", "put", "patch"):
                out.append((method, fill(route, pattern, ids)))
    return out


@pytest.mark.parametrize("label,body", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_every_write_endpoint_answers_bad_input_with_400_problem_json(cast: Cast, label: str, body: str) -> None:
    ids = populate(cast.alice, cast.bob).ids
    endpoints = write_endpoints(ids)
    assert len(endpoints) >= 10
    service_token = services.service_token_create(name="data plane").plaintext
    before = counts()
    for method, path in endpoints:
        # The data plane's endpoints take only its service token; every other one takes Alice's.
        token = service_token if path.startswith("/api/v1/dataplane/") else cast.alice.token
        response: Any = getattr(client_for(token), method)(path, data=body, content_type="application/json")
        assert response.status_code == 400, f"{method.upper()} {path} with {label}: {response.status_code}"
        assert response["Content-Type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 400 and problem["type"].startswith("urn:aileron:problem:")
        assert problem["detail"]
    assert counts() == before


def test_a_validation_problem_points_at_the_offending_field(cast: Cast) -> None:
    org = cast.alice.org.pk
    response = client_for(cast.alice.token).post(
        f"/api/v1/orgs/{org}/invitations/", {"email": "nope", "role": "member"}, format="json"
    )
    assert response.status_code == 400
    assert {"pointer": "/email", "detail": "Enter a valid email address."} in response.json()["errors"]


def test_a_form_encoded_body_is_refused_as_unsupported(cast: Cast) -> None:
    response = client_for(cast.alice.token).post(
        "/api/v1/tokens/", "name=x", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert response["Content-Type"] == "application/problem+json"


def test_an_unknown_api_path_is_a_problem_json_404() -> None:
    response = client_for(None).get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:aileron:problem:not-found"


def test_an_oversized_body_is_refused_with_413(cast: Cast) -> None:
    body = json.dumps({"name": "x" * 17_000_000})
    response = client_for(cast.alice.token).post("/api/v1/tokens/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["type"] == "urn:aileron:problem:payload-too-large"
    assert not ApiToken.objects.filter(name__startswith="xxx").exists()
