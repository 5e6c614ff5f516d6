"""OpenAPI 3.0/3.1 descriptions -> matcher routes. Pure; used at import time, never per request."""

from __future__ import annotations

import re
from typing import Any

from connectors.matcher import Param, Route

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def resolve(spec: dict[str, Any], node: Any, seen: frozenset[str] = frozenset()) -> Any:
    """Follow a local `$ref` (#/components/...), refusing cycles."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
            raise ValueError(f"unsupported or cyclic $ref {ref!r}")
        seen = seen | {ref}
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def kebab(text: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", text)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _param(spec: dict[str, Any], raw: Any) -> tuple[str, Param]:
    p = resolve(spec, raw)
    schema = resolve(spec, p.get("schema", {})) if isinstance(p.get("schema"), dict) else {}
    kind = schema.get("type", "string")
    if isinstance(kind, list):  # 3.1: ["integer", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    if kind not in ("string", "integer", "number", "boolean"):
        kind = "string"
    return str(p.get("in")), Param(name=str(p["name"]), type=kind, required=bool(p.get("required", False)))


def action_name(operation: dict[str, Any], method: str, path: str) -> str:
    op_id = operation.get("operationId")
    if op_id:
        return kebab(str(op_id).replace("/", "-"))
    return kebab(f"{method} {path}")


def routes_from_openapi(
    spec: dict[str, Any], *, connector: str, hosts: tuple[str, ...], only: set[str] | None = None
) -> list[Route]:
    """One route per operation (or per operation named in ONLY, by action name)."""
    routes = []
    for path, item in (spec.get("paths") or {}).items():
        item = resolve(spec, item)
        shared = [_param(spec, p) for p in item.get("parameters", [])]
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            name = action_name(operation, method, path)
            if only is not None and name not in only:
                continue
            params = dict(((where, p.name), p) for where, p in shared)
            params.update(
                ((where, p.name), p) for where, p in (_param(spec, x) for x in operation.get("parameters", []))
            )
            routes.append(
                Route(
                    action=f"{connector}.{name}",
                    method=method.upper(),
                    path=path,
                    hosts=hosts,
                    path_params=tuple(p for (where, _), p in params.items() if where == "path"),
                    query_params=tuple(p for (where, _), p in params.items() if where == "query"),
                )
            )
    return routes
