"""The matcher: one normalization, compiled routes, refusal of anything ambiguous."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from connectors.graphql import graphql_operations
from connectors.matcher import Param, Refused, Route, Router, normalize_path, parse_form_body, parse_json_body
from connectors.openapi import routes_from_openapi

GITHUB_SPEC = Path(
    os.environ.get(
        "AILERON_GITHUB_SPEC", Path(__file__).resolve().parents[2] / ".cache" / "octokit" / "api.github.com.json"
    )
)

ROUTES = [
    Route("github.create-issue", "POST", "/repos/{owner}/{repo}/issues", ("api.github.com",)),
    Route(
        "github.get-issue",
        "GET",
        "/repos/{owner}/{repo}/issues/{issue_number}",
        ("api.github.com",),
        path_params=(Param("issue_number", "integer", True),),
    ),
    Route(
        "github.list-issue-comments",
        "GET",
        "/repos/{owner}/{repo}/issues/comments",
        ("api.github.com",),
        query_params=(Param("per_page", "integer"),),
    ),
]


@pytest.mark.parametrize(
    "raw,canonical",
    [
        ("/repos/o/r/issues", "/repos/o/r/issues"),
        ("//repos//o/r/issues/", "/repos/o/r/issues"),
        ("/repos/./o/r/x/../issues", "/repos/o/r/issues"),
        ("/rep%6Fs/o/r/issues", "/repos/o/r/issues"),
        ("/repos/o%20x/r", "/repos/o%20x/r"),
    ],
)
def test_paths_normalize_one_way(raw: str, canonical: str) -> None:
    assert normalize_path(raw)[1] == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "/repos/o%2Fx/r",
        "/repos/o%5cx/r",
        "/repos/o;x=1/r",
        "/../etc",
        "/a/%2e%2e/%2e%2e/b",
        "/a%zz",
        "/a%00",
        "/caf%ff",
        "relative/path",
        "/a/%25/b",
    ],
)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    with pytest.raises(Refused):
        normalize_path(raw)


def test_literal_segments_beat_parameters_and_types_are_checked() -> None:
    router = Router(ROUTES)
    comments = router.match(host="api.github.com", method="GET", path="/repos/o/r/issues/comments", query="per_page=5")
    assert comments is not None and comments.action == "github.list-issue-comments"
    assert comments.args == {"owner": "o", "repo": "r", "per_page": 5}
    issue = router.match(host="API.GitHub.com.", method="get", path="/repos/o/r/issues/7")
    assert issue is not None and (issue.action, issue.args["issue_number"]) == ("github.get-issue", 7)
    assert router.match(host="api.github.com", method="GET", path="/repos/o/r/issues/seven") is None
    assert router.match(host="evil.example", method="GET", path="/repos/o/r/issues/7") is None


def test_method_overrides_and_repeated_keys_are_refused() -> None:
    router = Router(ROUTES)
    with pytest.raises(Refused):
        router.match(
            host="api.github.com", method="POST", path="/repos/o/r/issues", headers={"X-HTTP-Method-Override": "DELETE"}
        )
    with pytest.raises(Refused):
        router.match(
            host="api.github.com", method="GET", path="/repos/o/r/issues/comments", query="per_page=1&per_page=100"
        )
    with pytest.raises(Refused):
        parse_json_body(b'{"title": "a", "nested": {"x": 1, "x": 2}}')
    assert parse_form_body(b"expand[]=a&expand[]=b&metadata[k]=v") == {"expand[]": "a,b", "metadata[k]": "v"}
    with pytest.raises(Refused):
        parse_form_body(b"amount=100&amount=1")


def test_graphql_sees_through_aliases_names_fragments_and_batches() -> None:
    def ops(payload: Any) -> list[tuple[str, tuple[str, ...]]]:
        return [(o.type, o.root_fields) for o in graphql_operations(json.dumps(payload).encode())]

    assert ops({"query": "query { issues { nodes { id } } }"}) == [("query", ("issues",))]
    assert ops({"query": 'mutation { harmless: issueCreate(input: {title: "x"}) { success } }'}) == [
        ("mutation", ("issueCreate",))
    ]
    two = "query ListIssues { issues { nodes { id } } } mutation Make { issueCreate(input: {}) { success } }"
    assert ops({"query": two, "operationName": "Make"}) == [("mutation", ("issueCreate",))]
    hidden = 'mutation ListIssues { issueDelete(id: "1") { success } }'
    assert ops({"query": hidden, "operationName": "ListIssues"}) == [("mutation", ("issueDelete",))]
    spread = 'mutation { ...M } fragment M on Mutation { issueUpdate(id: "1", input: {}) { success } }'
    assert ops({"query": spread}) == [("mutation", ("issueUpdate",))]
    batch = [{"query": "query { viewer { id } }"}, {"query": "mutation { issueCreate(input: {}) { success } }"}]
    assert ops(batch) == [("query", ("viewer",)), ("mutation", ("issueCreate",))]
    ambiguous_requests: list[Any] = [
        {"query": two},
        {"query": two, "operationName": "Nope"},
        {"query": "query {"},
        [],
        {"query": "mutation { ...Loop } fragment Loop on Mutation { ...Loop }"},
    ]
    for ambiguous in ambiguous_requests:
        with pytest.raises(Refused):
            graphql_operations(json.dumps(ambiguous).encode())


# --- the full official GitHub REST description -------------------------------------------------------------

needs_github_spec = pytest.mark.skipif(
    not GITHUB_SPEC.exists(),
    reason=f"the GitHub REST description is not at {GITHUB_SPEC} (`make github-spec` fetches it from npm)",
)


def _value(param: Param) -> str:
    return {"integer": "42", "number": "7", "boolean": "true"}.get(param.type, f"v-{param.name.replace('_', '-')}")


def _concrete(route: Route) -> str:
    params = {p.name: p for p in route.path_params}
    parts = []
    for segment in route.path.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1]
            parts.append(_value(params.get(name, Param(name))))
        else:
            parts.append(segment)
    return "/".join(parts)


@pytest.fixture(scope="module")
def github() -> tuple[list[Route], Router]:
    spec = json.loads(GITHUB_SPEC.read_text())
    routes = routes_from_openapi(spec, connector="github", hosts=("api.github.com",))
    return routes, Router(routes)


@needs_github_spec
def test_every_github_operation_matches_itself_and_no_other(github: tuple[list[Route], Router]) -> None:
    routes, router = github
    assert len(routes) > 1000
    wrong = []
    for route in routes:
        found = router.match(host="api.github.com", method=route.method, path=_concrete(route))
        if found is None or found.action != route.action:
            wrong.append((route.method, route.path, found.action if found else None))
    assert wrong == []


@needs_github_spec
def test_adversarial_variants_match_the_same_action_or_nothing(github: tuple[list[Route], Router]) -> None:
    routes, router = github
    checked = 0
    for route in routes:
        path = _concrete(route)
        variants = [
            "/" + path,  # //
            path + "/",
            path.replace("/", "/./", 1),
            path.replace("/", "/x/../", 1),
            path.replace("s", "%73", 1),
            path.upper() if path.isascii() else path,
        ]
        for variant in variants:
            try:
                found = router.match(host="API.GITHUB.COM.", method=route.method, path=variant)
            except Refused:
                continue
            assert found is None or found.action == route.action, (variant, found.action if found else None)
            checked += 1
        for refused in (path + "%2F..", path.replace("/", "/%2e%2e/", 1), path + ";x=1"):
            with pytest.raises(Refused):
                router.match(host="api.github.com", method=route.method, path=refused)
    assert checked > 5000


@pytest.mark.parametrize("depth", [129, 5_000, 200_000])
def test_a_json_body_nested_too_deeply_is_refused_not_a_crash(depth: int) -> None:
    with pytest.raises(Refused, match="nested"):
        parse_json_body(b'{"title":' + b"[" * depth + b"]" * depth + b"}")
    with pytest.raises(Refused, match="nested"):
        parse_json_body(b'{"a":' * depth + b"1" + b"}" * depth)


def test_a_json_body_nested_within_the_bound_is_read() -> None:
    value: list[object] = []
    for _ in range(126):
        value = [value]
    assert parse_json_body(b'{"a":' + b"[" * 127 + b"]" * 127 + b"}") == {"a": value}


def test_non_finite_numbers_become_text_and_unreadable_integers_are_refused() -> None:
    """NaN and Infinity are not JSON: as numbers they would reach the audit log, which refuses them (and with
    them the rest of the data plane's batch)."""
    assert parse_json_body(b'{"t": NaN, "u": [Infinity, -Infinity]}') == {"t": "NaN", "u": ["Infinity", "-Infinity"]}
    with pytest.raises(Refused, match="not valid JSON"):
        parse_json_body(b'{"n": ' + b"9" * 5000 + b"}")
