"""The agent's own credential is removed in every form a client sends it, and removing it never fails."""

from __future__ import annotations

import itertools
import urllib.parse
from pathlib import Path

import pytest
from mitmproxy.test import tutils

from connectors.package import Auth, load
from dataplane import strip_auth
from dataplane.inject import strip_auth as _strip_auth

BUILTIN = Path(__file__).resolve().parents[2] / "connectors" / "builtin"
BUILTINS = sorted(p.name for p in BUILTIN.iterdir() if (p / "connector.toml").exists())


def test_a_header_named_in_several_lists_is_one_name() -> None:
    auth = Auth("header", "Authorization", "p", strip_headers=("authorization", "x-api-key"))
    names = strip_auth.header_names(auth)
    assert b"authorization" in names and b"x-api-key" in names and b"cookie" in names
    assert len(names) == len(strip_auth.AUTH_HEADERS)


def test_every_repeat_and_case_of_an_auth_header_goes_and_the_rest_stay_in_order() -> None:
    fields = (
        (b"Host", b"api.anthropic.com"),
        (b"x-api-key", b"one"),
        (b"Content-Type", b"application/json"),
        (b"X-API-KEY", b"two"),
        (b"Authorization", b"Bearer three"),
        (b"anthropic-version", b"2023-06-01"),
        (b"authorization", b"four"),
    )
    names = strip_auth.header_names(Auth("header", "x-api-key", "p"))
    assert strip_auth.without_headers(fields, names) == (
        (b"Host", b"api.anthropic.com"),
        (b"Content-Type", b"application/json"),
        (b"anthropic-version", b"2023-06-01"),
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/models?key=a", "/v1/models"),
        ("/v1/models?alt=sse&key=a", "/v1/models?alt=sse"),
        ("/v1/models?key=a&alt=sse&key=b", "/v1/models?alt=sse"),
        ("/v1/models?KEY=a&Key=b&alt=sse", "/v1/models?alt=sse"),
        ("/v1/models?k%65y=a&alt=sse", "/v1/models?alt=sse"),
        ("/v1/models?key&alt=sse", "/v1/models?alt=sse"),
        ("/v1/models?key=&alt=sse", "/v1/models?alt=sse"),
        ("/v1/models?key=a=b&alt=sse", "/v1/models?alt=sse"),
        ("/v1/models?keys=a&monkey=b", "/v1/models?keys=a&monkey=b"),
        ("/v1/models?alt=sse&&x=1", "/v1/models?alt=sse&&x=1"),
        ("/v1/models?", "/v1/models?"),
        ("/v1/models", "/v1/models"),
        ("/v1/models?k%zz=1&key=%zz", "/v1/models?k%zz=1"),
    ],
)
def test_every_form_of_a_credential_query_parameter_goes(path: str, expected: str) -> None:
    assert strip_auth.without_query(path, frozenset({"key"})) == expected


def test_a_query_scheme_connector_strips_its_own_parameter_too() -> None:
    auth = Auth("query", "api_key", "p", strip_query=("token",))
    assert strip_auth.query_names(auth) == frozenset({"api_key", "token"})
    assert strip_auth.without_query("/x?API_KEY=1&token=2&q=3", strip_auth.query_names(auth)) == "/x?q=3"


AGENT_HEADERS = [
    ("x-api-key", "p"),
    ("X-Api-Key", "p"),
    ("X-API-KEY", "p"),
    ("Authorization", "Bearer p"),
    ("authorization", "p"),
    ("AUTHORIZATION", "token p"),
    ("x-goog-api-key", "p"),
    ("X-Goog-Api-Key", "p"),
    ("api-key", "p"),
    ("Proxy-Authorization", "Basic cA=="),
    ("Cookie", "session=p"),
]


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("count", [1, 2, 3])
def test_stripping_never_fails_for_a_built_in_connector_whatever_the_agent_sends(name: str, count: int) -> None:
    connector = load(BUILTIN / name)
    for combo in itertools.combinations(AGENT_HEADERS, count):
        headers = ((b"Host", b"example"), *((k.encode(), v.encode()) for k, v in combo), (b"X-Kept", b"1"))
        request = tutils.treq(headers=headers, path=b"/v1/x?key=p&KEY=p&token=p&alt=sse")
        present = {k.lower() for k, _ in request.headers.fields}
        _strip_auth(request, connector, present)
        left = {k.lower() for k, _ in request.headers.fields}
        assert left == {b"host", b"x-kept"}, (name, combo)
        query = urllib.parse.parse_qsl(request.path.partition("?")[2], keep_blank_values=True)
        assert "alt" in dict(query)
        assert not {k.lower() for k, _ in query} & strip_auth.query_names(connector.auth), (name, request.path)
