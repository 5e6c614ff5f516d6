"""Request -> action matching for the data plane. Pure: no Django, no I/O.

Routes are compiled once into a per-(host, method) segment trie, so a match costs a walk down the path, not a
scan of every operation. One normalization (`normalize_path`) is applied for matching and for forwarding:
the data plane must send upstream exactly the path it matched, so nothing the upstream could read
differently slips past policy. Whatever could be read two ways is refused, not guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_to_bytes

METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
_PCHAR_SAFE = "!$&'()*+,=:@-._~"  # RFC 3986 pchar minus '/', ';' and '%', which we refuse inside a segment
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TEMPLATE_PARAM = re.compile(r"^\{([A-Za-z0-9_.-]+)\}$")
_EMBEDDED_PARAM = re.compile(r"\{([A-Za-z0-9_.-]+)\}")


def _segment_pattern(segment: str) -> re.Pattern[str]:
    parts = _EMBEDDED_PARAM.split(segment)  # literal, name, literal, name, ..., literal
    regex = "".join(re.escape(part) if i % 2 == 0 else "(.+?)" for i, part in enumerate(parts))
    return re.compile(f"^{regex}$")


class Refused(ValueError):
    """The request is malformed or ambiguous; the data plane must refuse it (never forward it unmatched)."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str = "string"  # string | integer | number | boolean
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    action: str
    method: str
    path: str  # an OpenAPI path template: /repos/{owner}/{repo}/issues
    hosts: tuple[str, ...]
    path_params: tuple[Param, ...] = ()
    query_params: tuple[Param, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    action: str
    route: Route
    args: dict[str, Any]
    path: str  # the normalized path: forward exactly this


@dataclass
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    # segments that mix text and parameters, such as GitHub's "{base}...{head}"
    patterns: dict[str, tuple[re.Pattern[str], _Node]] = field(default_factory=dict)
    param: tuple[str, _Node] | None = None
    route: Route | None = None
    route_params: tuple[Param, ...] = ()  # the route's path parameters in template order (hashing a Route is slow)


def normalize_host(host: str) -> str:
    host = host.strip().lower()
    if host.endswith(":443"):
        host = host[:-4]
    host = host.rstrip(".")
    if not host or any(c in host for c in "/\\@ ") or host.count(":") > 1 and not host.startswith("["):
        raise Refused(f"malformed host {host!r}")
    return host


_PLAIN_PATH = re.compile(r"^(?:/[A-Za-z0-9!$&'()*+,=:@_~.-]+)+/?$")


def normalize_path(raw: str) -> tuple[list[str], str]:
    """Decoded segments and the canonical path to forward.

    Collapses `//`, resolves `.` and `..` (refusing to climb above the root), drops a trailing slash, and
    decodes percent-escapes once. Refuses encoded slashes or backslashes, `;` parameters, control characters,
    malformed escapes and non-UTF-8 bytes: each is read differently by different servers.
    """
    if _PLAIN_PATH.match(raw):  # the common case: nothing to decode, collapse or resolve
        plain = raw.strip("/").split("/")
        if "." not in plain and ".." not in plain:
            return plain, raw.rstrip("/") or "/"
    if not raw.startswith("/"):
        raise Refused("the path must start with /")
    if _PERCENT.search(raw):
        raise Refused("malformed percent-escape in the path")
    segments: list[str] = []
    for piece in raw.split("/"):
        if ";" in piece:
            raise Refused("path parameters (;) are not accepted")
        try:
            decoded = unquote_to_bytes(piece).decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("the path is not UTF-8") from None
        if "/" in decoded or "\\" in decoded or ";" in decoded or "%" in decoded:
            raise Refused("encoded /, \\, ; or % inside a path segment")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
            raise Refused("control characters in the path")
        if decoded in ("", "."):
            continue
        if decoded == "..":
            if not segments:
                raise Refused("the path climbs above the root")
            segments.pop()
            continue
        segments.append(decoded)
    canonical = "/" + "/".join(quote(s, safe=_PCHAR_SAFE) for s in segments)
    return segments, canonical


def _coerce(value: str, param: Param) -> Any:
    """The typed value, or raise ValueError when it is not of the declared type."""
    if param.type == "integer":
        if not re.fullmatch(r"-?[0-9]{1,18}", value):
            raise ValueError(value)
        return int(value)
    if param.type == "number":
        if not re.fullmatch(r"-?[0-9]{1,18}(\.[0-9]{1,18})?", value):
            raise ValueError(value)
        return float(value)
    if param.type == "boolean":
        if value not in ("true", "false"):
            raise ValueError(value)
        return value == "true"
    return value


def parse_query(query: str) -> dict[str, str]:
    """Query parameters; a repeated key is refused (which one would the upstream use?)."""
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise Refused("the query is not UTF-8") from None
    for key, value in pairs:
        if key in out and not key.endswith("[]"):
            raise Refused(f"the query repeats {key!r}")
        out[key] = value if key not in out else out[key] + "," + value
    return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise Refused(f"the JSON body repeats the key {key!r}")
        seen[key] = value
    return seen


MAX_JSON_DEPTH = 128  # API bodies nest a handful of levels; deeper ones only serve to exhaust a recursive reader


def parse_json_body(body: bytes) -> Any:
    """A JSON body; duplicate keys anywhere, and nesting deeper than MAX_JSON_DEPTH, are refused."""
    try:
        # NaN and Infinity are not JSON (RFC 8259), though Python reads them: kept as their text, so that no
        # non-finite number reaches the arguments that policy sees and the audit log stores.
        data = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=str)
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError, and integers of more digits than Python reads
        raise Refused("the body is not valid JSON") from None
    except RecursionError:
        raise Refused(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise Refused(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether `data` nests arrays and objects more than `limit` deep (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            if depth >= limit:
                return True
            stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return False


def parse_form_body(body: bytes) -> dict[str, str]:
    """A form body (Stripe style: `a[b]=c`, repeated `x[]` allowed); other repeated keys are refused."""
    try:
        return parse_query(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refused("the body is not UTF-8") from None


class Router:
    """Compiled routes for a set of connectors."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._tries: dict[tuple[str, str], _Node] = {}
        self.count = 0
        for route in routes:
            self._add(route)

    def _add(self, route: Route) -> None:
        declared = {p.name: p for p in route.path_params}
        ordered = tuple(declared.get(n, Param(n)) for n in _EMBEDDED_PARAM.findall(route.path))
        template = [s for s in route.path.split("/") if s]
        for host in route.hosts:
            node = self._tries.setdefault((normalize_host(host), route.method.upper()), _Node())
            for segment in template:
                name = _TEMPLATE_PARAM.match(segment)
                if name is None and "{" in segment:
                    if segment not in node.patterns:
                        node.patterns[segment] = (_segment_pattern(segment), _Node())
                    node = node.patterns[segment][1]
                elif name is None:
                    node = node.literals.setdefault(segment, _Node())
                elif node.param is None:
                    node.param = (name.group(1), _Node())
                    node = node.param[1]
                else:
                    # Two templates with differently named parameters at one place share the node; each route
                    # keeps its own names (see _bind).
                    node = node.param[1]
            if node.route is not None and node.route.action != route.action:
                raise ValueError(f"{route.action} and {node.route.action} share {route.method} {route.path}")
            node.route = route
            node.route_params = ordered
        self.count += 1

    def match(
        self,
        *,
        host: str,
        method: str,
        path: str,
        query: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> Match | None:
        """The action this request performs, or None when no route matches. Raises Refused on ambiguity."""
        if headers:
            for name in headers:
                if name.lower() in METHOD_OVERRIDE_HEADERS:
                    raise Refused(f"method-override header {name} is not accepted")
        segments, canonical = normalize_path(path)
        root = self._tries.get((host, method)) or self._tries.get((normalize_host(host), method.upper()))
        if root is None:
            return None
        values: list[str] = []
        node = self._walk(root, segments, 0, values)
        if node is None:
            return None
        route = node.route
        assert route is not None  # noqa: S101  (_walk returns only nodes with a route)
        args = self._bind(node.route_params, values)
        if args is None:
            return None
        params = parse_query(query) if query else {}
        for param in route.query_params:
            if param.name in params:
                try:
                    args[param.name] = _coerce(params[param.name], param)
                except ValueError:
                    raise Refused(f"query parameter {param.name!r} must be {param.type}") from None
        return Match(action=route.action, route=route, args=args, path=canonical)

    def _walk(self, node: _Node, segments: list[str], i: int, values: list[str]) -> _Node | None:
        """The route node for segments[i:], filling VALUES with the parameters in order (backtracking)."""
        if i == len(segments):
            return node if node.route is not None else None
        segment = segments[i]
        literal = node.literals.get(segment)
        if literal is not None:  # a literal beats a parameter; backtrack if the literal branch dead-ends
            found = self._walk(literal, segments, i + 1, values)
            if found is not None:
                return found
        for pattern, child in node.patterns.values():
            groups = pattern.match(segment)
            if groups is not None:
                captured = groups.groups()
                values.extend(captured)
                found = self._walk(child, segments, i + 1, values)
                if found is not None:
                    return found
                del values[len(values) - len(captured) :]
        if node.param is not None:
            values.append(segment)
            found = self._walk(node.param[1], segments, i + 1, values)
            if found is not None:
                return found
            values.pop()
        return None

    @staticmethod
    def _bind(params: tuple[Param, ...], values: list[str]) -> dict[str, Any] | None:
        args: dict[str, Any] = {}
        for param, value in zip(params, values, strict=True):
            try:
                args[param.name] = value if param.type == "string" else _coerce(value, param)
            except ValueError:
                return None  # "abc" where an integer belongs: not this route
        return args
