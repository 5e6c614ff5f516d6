"""The OpenAPI schema reads as a product: each operation its own summary and description, a tag of its area, the
permission it needs, examples for the common calls, and none of the data plane's internal endpoints."""

from __future__ import annotations

import re
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

from aileron_site.schema import EXAMPLES
from tests.urlwalk import api_routes

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return dict(SchemaGenerator().get_schema(request=None, public=True))  # type: ignore[no-untyped-call]


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, item in schema["paths"].items() for m, op in item.items() if m in METHODS]


def test_no_internal_endpoint_is_public_and_every_other_one_is(schema: dict[str, Any]) -> None:
    paths = set(schema["paths"])
    routed = {"/" + re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", route) for route, _ in api_routes()}
    internal = {r for r in routed if r.startswith("/api/v1/dataplane/")}
    assert internal and not internal & paths  # they exist, and are not listed
    assert routed - internal - paths == set(), "every public endpoint is in the schema"


def test_every_operation_has_its_own_summary_a_real_description_and_a_declared_tag(schema: dict[str, Any]) -> None:
    ops = operations(schema)
    assert len(ops) > 80
    summaries = [op.get("summary") for _, _, op in ops]
    assert all(summaries) and len(set(summaries)) == len(summaries), "a summary for each, each its own"
    declared = {t["name"] for t in schema["tags"]}
    for method, path, op in ops:
        description = op.get("description", "")
        assert description and "Base for everything" not in description, f"{method} {path}"
        assert op.get("tags") and set(op["tags"]) <= declared, f"{method} {path}: {op.get('tags')}"


def test_organization_operations_name_the_permission_they_need(schema: dict[str, Any]) -> None:
    ops = {f"{m} {p}": op for m, p, op in operations(schema)}
    assert "Role permission: `team.manage`" in ops["POST /api/v1/orgs/{org_id}/teams/"]["description"]
    assert "Role permission: `policy.manage`" in ops["PUT /api/v1/orgs/{org_id}/egress/"]["description"]
    assert "Role permission: `member.manage`" in ops["PATCH /api/v1/orgs/{org_id}/members/{member_id}/"]["description"]


def test_the_common_calls_carry_an_example_of_their_body(schema: dict[str, Any]) -> None:
    ops = {f"{m} {p}": op for m, p, op in operations(schema)}
    for key, body in EXAMPLES.items():
        content = ops[key]["requestBody"]["content"]["application/json"]
        assert content["examples"]["Example"]["value"] == body, key
