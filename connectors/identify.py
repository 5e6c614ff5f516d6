"""Identify the actions of a whole request (REST or GraphQL), with typed arguments. Pure; the data plane's entry.

    catalog = Catalog(installed_connectors)
    catalog.identify(host=..., method=..., path=..., query=..., headers=..., body=...)

returns one Identified per action the request performs (several for a GraphQL batch or several root
fields), an empty list when no connector knows the request, and raises Refused when the request could be read
in more than one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.graphql import graphql_operations
from connectors.matcher import Refused, Router, parse_form_body, parse_json_body
from connectors.package import Connector


@dataclass(frozen=True, slots=True)
class Identified:
    action: str
    connector: str
    args: dict[str, Any]
    path: str  # the normalized path to forward


class Catalog:
    def __init__(self, connectors: list[Connector]) -> None:
        self.connectors = {c.name: c for c in connectors}
        self.router = Router(route for c in connectors for route in c.routes)

    def identify(
        self,
        *,
        host: str,
        method: str,
        path: str,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> list[Identified]:
        found = self.router.match(host=host, method=method, path=path, query=query, headers=headers)
        if found is None:
            return []
        name = found.action.split(".", 1)[0]
        connector = self.connectors[name]
        if connector.graphql_path is not None and found.route.path == connector.graphql_path:
            out = []
            for op in graphql_operations(body):
                for field_name in op.root_fields:
                    action = connector.graphql_actions.get((op.type, field_name))
                    if action is None:
                        raise Refused(f"{name}: {op.type} {field_name} is not an action of this connector")
                    out.append(Identified(action, name, dict(op.variables), found.path))
            return out
        args = dict(found.args)
        content_type = _content_type(headers)
        if body:
            if content_type == "application/json":
                parsed = parse_json_body(body)
                if isinstance(parsed, dict):
                    args.update({k: v for k, v in parsed.items() if k not in found.args})
            elif content_type == "application/x-www-form-urlencoded":
                args.update({k: v for k, v in parse_form_body(body).items() if k not in found.args})
            else:
                raise Refused(f"cannot read a {content_type or 'untyped'} body for {found.action}")
        return [Identified(found.action, name, args, found.path)]


def _content_type(headers: Mapping[str, str] | None) -> str:
    # Keys only, then one lookup: `.items()` on a multi-valued mapping (mitmproxy's Headers) looks every key
    # up again, which is quadratic in the number of headers.
    for key in headers or ():
        if key.lower() == "content-type":
            return headers[key].split(";", 1)[0].strip().lower() if headers else ""
    return ""
