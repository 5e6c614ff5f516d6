"""Removing whatever credential the agent sent before the real one is injected. Pure, and it never raises.

An agent's client sends its placeholder the way its SDK or CLI does: a header in any case (`x-api-key`,
`X-Api-Key`), repeated, under several names at once (`x-api-key` and `Authorization: Bearer`), or as a query
parameter (`?key=`). All of it goes, in one pass over the headers: a name listed twice (the connector's own
header is often also a generic one, as `x-api-key` and Linear's `Authorization` are) is one entry of a set,
never a second deletion.
"""

from __future__ import annotations

import functools
import urllib.parse

from connectors.package import Auth

# Headers some API reads a credential from: removed on every connector's host, whatever its own scheme.
AUTH_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie")

HeaderFields = tuple[tuple[bytes, bytes], ...]


@functools.lru_cache(maxsize=256)
def header_names(auth: Auth) -> frozenset[bytes]:
    """The lower-cased names of every header a credential may ride in to a connector with this auth."""
    own = (auth.name,) if auth.scheme == "header" and auth.name else ()
    return frozenset(name.encode("utf-8").lower() for name in (*AUTH_HEADERS, *own, *auth.strip_headers))


@functools.lru_cache(maxsize=256)
def query_names(auth: Auth) -> frozenset[str]:
    """The lower-cased names of every query parameter a credential may ride in to a connector with this auth."""
    own = (auth.name,) if auth.scheme == "query" and auth.name else ()
    return frozenset(name.lower() for name in (*own, *auth.strip_query))


def without_headers(fields: HeaderFields, names: frozenset[bytes]) -> HeaderFields:
    """`fields` without any header whose name is in `names` (ASCII case-insensitively, as HTTP compares them);
    every repeat goes."""
    return tuple(field for field in fields if field[0].lower() not in names)


def without_query(path: str, names: frozenset[str]) -> str:
    """`path` without any query parameter whose name, percent-decoded and lower-cased, is in `names`; the
    path is returned unchanged when none is there."""
    base, sep, query = path.partition("?")
    if not sep or not names:
        return path
    pairs = query.split("&")
    kept = [pair for pair in pairs if urllib.parse.unquote_plus(pair.split("=", 1)[0]).lower() not in names]
    if len(kept) == len(pairs):
        return path
    return base + ("?" + "&".join(kept) if kept else "")
