"""Connector packages: a folder with `connector.toml` and the upstream's OpenAPI description. Pure.

    name = "github"
    description = "GitHub REST API"
    hosts = ["api.github.com"]
    spec = "openapi.json"
    [auth]
    scheme = "bearer"              # bearer | header | basic | query
    name = "Authorization"         # the header (scheme header) or query parameter (scheme query)
    placeholder = "ghp_aileron_placeholder"
    strip_query = ["key"]          # optional: other places a credential may ride, stripped by the proxy
    strip_headers = []
    [[actions]]                    # the curated subset; or `actions = "all"` for every operation
    id = "create-issue"
    operation = "issues/create"    # the operationId in the spec
    approval = "never"             # never | always
    idempotent = false
    sensitive = ["body"]           # arguments redacted in audit

A connector is data: adding one needs no Python. With `actions = "all"` reads (GET, HEAD) need no approval
and every other method needs one.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.matcher import Refused, Route, normalize_host
from connectors.openapi import HTTP_METHODS, action_name, resolve, routes_from_openapi

AUTH_SCHEMES = ("bearer", "header", "basic", "query")
APPROVALS = ("never", "always", "conditional")
CONDITION_TESTS = ("above", "below", "equals", "in", "present")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_ACTION = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


class ConnectorError(ValueError):
    """A connector package is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Auth:
    scheme: str
    name: str | None
    placeholder: str
    # Other places the upstream reads a credential from, which the proxy strips too (Gemini's `?key=`).
    strip_headers: tuple[str, ...] = ()
    strip_query: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on an argument; an action with `approval = "conditional"` needs approval when any holds."""

    argument: str
    test: str
    value: Any

    def holds(self, args: dict[str, Any]) -> bool:
        if self.test == "present":
            return (self.argument in args) == bool(self.value)
        if self.argument not in args:
            return False
        actual = args[self.argument]
        if self.test == "equals":
            return bool(actual == self.value or str(actual) == str(self.value))
        if self.test == "in":
            return str(actual) in {str(v) for v in self.value}
        try:
            number = float(actual)
        except (TypeError, ValueError):
            return True  # not a number where a bound applies: ask a human rather than guess
        return number > float(self.value) if self.test == "above" else number < float(self.value)


def _approval(entry: dict[str, Any], default: str, label: str) -> tuple[str, tuple[Condition, ...]]:
    approval = entry.get("approval", default)
    if approval not in APPROVALS:
        raise ConnectorError(f"{label}: `approval` must be one of {', '.join(APPROVALS)}")
    raw = entry.get("approval_when", [])
    if (approval == "conditional") != bool(raw):
        raise ConnectorError(f'{label}: `approval_when` goes with, and only with, approval = "conditional"')
    conditions = []
    for index, item in enumerate(raw):
        tests = [t for t in CONDITION_TESTS if isinstance(item, dict) and t in item]
        if not isinstance(item, dict) or not isinstance(item.get("argument"), str) or len(tests) != 1:
            raise ConnectorError(
                f"{label}: approval_when[{index}] needs `argument` and one of {', '.join(CONDITION_TESTS)}"
            )
        value = item[tests[0]]
        if tests[0] in ("above", "below") and not isinstance(value, int | float):
            raise ConnectorError(f"{label}: approval_when[{index}].{tests[0]} must be a number")
        if tests[0] == "in" and not isinstance(value, list):
            raise ConnectorError(f"{label}: approval_when[{index}].in must be a list")
        conditions.append(Condition(argument=item["argument"], test=tests[0], value=value))
    return approval, tuple(conditions)


@dataclass(frozen=True, slots=True)
class Action:
    id: str  # connector.action
    connector: str
    name: str
    description: str
    method: str
    path: str
    idempotent: bool
    approval: str
    sensitive: tuple[str, ...]
    arguments: dict[str, Any]
    approval_when: tuple[Condition, ...] = ()

    def approval_required(self, args: dict[str, Any]) -> bool:
        """The connector's default; organization and team policy may override it (the policy engine)."""
        if self.approval == "conditional":
            return any(c.holds(args) for c in self.approval_when)
        return self.approval == "always"

    def manifest_entry(self) -> dict[str, Any]:
        entry = self._manifest_fields()
        if self.approval_when:
            entry["approval_when"] = [{"argument": c.argument, c.test: c.value} for c in self.approval_when]
        return entry

    def _manifest_fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connector": self.connector,
            "action": self.name,
            "description": self.description,
            "method": self.method,
            "path": self.path,
            "arguments": self.arguments,
            "idempotent": self.idempotent,
            "approval": self.approval,
        }


@dataclass(frozen=True, slots=True)
class Connector:
    name: str
    description: str
    hosts: tuple[str, ...]
    auth: Auth
    actions: tuple[Action, ...]
    routes: tuple[Route, ...] = field(repr=False)
    folder: Path | None = None
    # GraphQL connectors: the endpoint's path, and (operation type, root field) -> action id
    graphql_path: str | None = None
    graphql_actions: dict[tuple[str, str], str] = field(default_factory=dict)
    graphql_schema: str | None = field(default=None, repr=False)


def _argument_schema(spec: dict[str, Any], path_item: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for raw in [*path_item.get("parameters", []), *operation.get("parameters", [])]:
        param = resolve(spec, raw)
        if param.get("in") not in ("path", "query"):
            continue
        schema = resolve(spec, param.get("schema", {})) if isinstance(param.get("schema"), dict) else {}
        properties[param["name"]] = {
            "in": param["in"],
            "type": schema.get("type", "string"),
            "description": str(param.get("description", ""))[:300],
        }
        if param.get("required"):
            required.append(param["name"])
    body = resolve(spec, operation.get("requestBody", {})) if operation.get("requestBody") else {}
    content = body.get("content", {})
    media = next((m for m in ("application/json", "application/x-www-form-urlencoded") if m in content), None)
    if media:
        schema = resolve(spec, content[media].get("schema", {}))
        for name, prop in (schema.get("properties") or {}).items():
            prop = resolve(spec, prop)
            properties.setdefault(
                name,
                {
                    "in": "body",
                    "type": prop.get("type", "string") if isinstance(prop.get("type"), str) else "any",
                    "description": str(prop.get("description", ""))[:300],
                },
            )
        required += [r for r in schema.get("required", []) if r not in required]
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if media:
        out["body"] = media
    return out


def _operations(spec: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """operationId-derived name -> (method, path, path item, operation)."""
    out = {}
    for path, item in (spec.get("paths") or {}).items():
        item = resolve(spec, item)
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                out[action_name(operation, method, path)] = (method.upper(), path, item, operation)
    return out


def _raw_op_names(spec: dict[str, Any]) -> dict[str, str]:
    """The spec's own operationId -> our action name."""
    names = {}
    for path, item in (spec.get("paths") or {}).items():
        for method in HTTP_METHODS:
            operation = resolve(spec, item).get(method)
            if isinstance(operation, dict) and operation.get("operationId"):
                names[str(operation["operationId"])] = action_name(operation, method, path)
    return names


def build(
    meta: dict[str, Any], spec: dict[str, Any], *, where: str = "connector.toml", folder: Path | None = None
) -> Connector:
    def need(key: str, kind: type) -> Any:
        value = meta.get(key)
        if not isinstance(value, kind):
            raise ConnectorError(f"{where}: `{key}` must be a {kind.__name__}")
        return value

    name = need("name", str)
    if not _NAME.match(name):
        raise ConnectorError(f"{where}: `name` must be lowercase letters, digits and dashes")
    listed = need("hosts", list)
    if not listed or not all(isinstance(h, str) and h for h in listed):
        raise ConnectorError(f"{where}: `hosts` must list at least one host name")
    try:  # as the data plane compares them: API.GitHub.com. and api.github.com:443 are api.github.com
        hosts = tuple(dict.fromkeys(normalize_host(h) for h in listed))
    except Refused as exc:
        raise ConnectorError(f"{where}: `hosts`: {exc}") from None
    auth_meta = need("auth", dict)
    scheme = auth_meta.get("scheme")
    if scheme not in AUTH_SCHEMES:
        raise ConnectorError(f"{where}: `auth.scheme` must be one of {', '.join(AUTH_SCHEMES)}")
    if scheme in ("header", "query") and not isinstance(auth_meta.get("name"), str):
        raise ConnectorError(f"{where}: `auth.name` is required for scheme {scheme}")
    extra: dict[str, tuple[str, ...]] = {}
    for key in ("strip_headers", "strip_query"):
        value = auth_meta.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConnectorError(f"{where}: `auth.{key}` must be a list of names")
        extra[key] = tuple(v.lower() if key == "strip_headers" else v for v in value)
    auth = Auth(
        scheme=scheme,
        name=auth_meta.get("name"),
        placeholder=str(auth_meta.get("placeholder", "aileron")),
        **extra,
    )

    operations = _operations(spec)
    by_op_id = _raw_op_names(spec)
    wanted = meta.get("actions", "all")
    entries: list[dict[str, Any]]
    if wanted == "all":
        entries = [{"id": n, "operation_name": n} for n in operations]
    elif isinstance(wanted, list):
        entries = wanted
    else:
        raise ConnectorError(f'{where}: `actions` must be "all" or a list of [[actions]] tables')

    actions = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        label = f"{where}: actions[{index}]"
        action_id = entry.get("id")
        if not isinstance(action_id, str) or not _ACTION.match(action_id):
            raise ConnectorError(f"{label}: `id` must be kebab-case")
        if action_id in seen:
            raise ConnectorError(f"{label}: duplicate id {action_id!r}")
        seen.add(action_id)
        op_name = entry.get("operation_name") or by_op_id.get(str(entry.get("operation")))
        if op_name not in operations:
            raise ConnectorError(f"{label}: no operation {entry.get('operation')!r} in the spec")
        method, path, item, operation = operations[op_name]
        approval, conditions = _approval(entry, "never" if method in ("GET", "HEAD") else "always", label)
        actions.append(
            Action(
                id=f"{name}.{action_id}",
                connector=name,
                name=action_id,
                description=str(entry.get("description") or operation.get("summary") or "").strip(),
                method=method,
                path=path,
                idempotent=bool(entry.get("idempotent", method in ("GET", "HEAD", "PUT", "DELETE"))),
                approval=approval,
                approval_when=conditions,
                sensitive=tuple(entry.get("sensitive", [])),
                arguments=_argument_schema(spec, item, operation),
            )
        )
    keep = {a.path + " " + a.method: a.id for a in actions}
    routes = tuple(
        Route(
            action=keep[r.path + " " + r.method],
            method=r.method,
            path=r.path,
            hosts=hosts,
            path_params=r.path_params,
            query_params=r.query_params,
        )
        for r in routes_from_openapi(spec, connector=name, hosts=hosts)
        if r.path + " " + r.method in keep
    )
    return Connector(
        name=name,
        description=str(meta.get("description", "")),
        hosts=hosts,
        auth=auth,
        actions=tuple(actions),
        routes=routes,
        folder=folder,
    )


def _json_kind(gql_type: Any) -> str:
    from graphql import GraphQLInputObjectType, GraphQLList, GraphQLNonNull

    while isinstance(gql_type, GraphQLNonNull):
        gql_type = gql_type.of_type
    if isinstance(gql_type, GraphQLList):
        return "array"
    if isinstance(gql_type, GraphQLInputObjectType):
        return "object"
    return {"Int": "integer", "Float": "number", "Boolean": "boolean"}.get(getattr(gql_type, "name", ""), "string")


def _graphql_arguments(schema: Any, op_type: str, field_name: str) -> dict[str, Any]:
    root = {"query": schema.query_type, "mutation": schema.mutation_type}.get(op_type)
    gql_field = root.fields.get(field_name) if root is not None else None
    if gql_field is None:
        raise ConnectorError(f"the GraphQL schema has no {op_type} field {field_name!r}")
    properties = {
        name: {
            "in": "graphql",
            "type": _json_kind(arg.type),
            "graphql_type": str(arg.type),
            "description": (arg.description or "")[:300],
        }
        for name, arg in gql_field.args.items()
    }
    required = [name for name, arg in gql_field.args.items() if str(arg.type).endswith("!")]
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def build_graphql(meta: dict[str, Any], schema_text: str, *, where: str, folder: Path | None = None) -> Connector:
    """A GraphQL connector: actions are root fields (`graphql = "mutation issueCreate"`) of its schema."""
    from graphql import GraphQLError, build_schema

    shell = build({**meta, "actions": []}, {"paths": {}}, where=where, folder=folder)
    try:
        schema = build_schema(schema_text)
    except (GraphQLError, TypeError) as exc:
        raise ConnectorError(f"{where}: the GraphQL schema does not build: {exc}") from None
    path = meta.get("graphql_path", "/graphql")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConnectorError(f"{where}: `graphql_path` must be a path such as /graphql")
    entries = meta.get("actions")
    if not isinstance(entries, list):
        raise ConnectorError(f"{where}: a GraphQL connector lists its [[actions]]")
    actions, mapping = [], {}
    for index, entry in enumerate(entries):
        label = f"{where}: actions[{index}]"
        action_id, target = entry.get("id"), entry.get("graphql")
        if not isinstance(action_id, str) or not _ACTION.match(action_id):
            raise ConnectorError(f"{label}: `id` must be kebab-case")
        if not isinstance(target, str) or len(target.split()) != 2 or target.split()[0] not in ("query", "mutation"):
            raise ConnectorError(f'{label}: `graphql` must read "query FIELD" or "mutation FIELD"')
        op_type, field_name = target.split()
        try:
            arguments = _graphql_arguments(schema, op_type, field_name)
        except ConnectorError as exc:
            raise ConnectorError(f"{label}: {exc}") from None
        approval, conditions = _approval(entry, "never" if op_type == "query" else "always", label)
        full = f"{shell.name}.{action_id}"
        mapping[(op_type, field_name)] = full
        actions.append(
            Action(
                id=full,
                connector=shell.name,
                name=action_id,
                description=str(entry.get("description", "")),
                method="POST",
                path=path,
                idempotent=bool(entry.get("idempotent", op_type == "query")),
                approval=approval,
                approval_when=conditions,
                sensitive=tuple(entry.get("sensitive", [])),
                arguments=arguments,
            )
        )
    route = Route(action=f"{shell.name}.graphql", method="POST", path=path, hosts=shell.hosts)
    return Connector(
        name=shell.name,
        description=shell.description,
        hosts=shell.hosts,
        auth=shell.auth,
        actions=tuple(actions),
        routes=(route,),
        folder=folder,
        graphql_path=path,
        graphql_actions=mapping,
        graphql_schema=schema_text,
    )


def load(folder: Path) -> Connector:
    meta_path = folder / "connector.toml"
    try:
        meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConnectorError(f"{folder}: no connector.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConnectorError(f"{meta_path}: {exc}") from None
    if "graphql_schema" in meta:
        schema_name = meta["graphql_schema"]
        if not isinstance(schema_name, str) or "/" in schema_name or schema_name.startswith("."):
            raise ConnectorError(f"{meta_path}: `graphql_schema` must name a file in the package folder")
        try:
            schema_text = (folder / schema_name).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConnectorError(f"{folder / schema_name}: cannot read it ({exc.strerror})") from None
        return build_graphql(meta, schema_text, where=str(meta_path), folder=folder)
    spec_name = meta.get("spec")
    if not isinstance(spec_name, str) or "/" in spec_name or spec_name.startswith("."):
        raise ConnectorError(f"{meta_path}: `spec` must name a file in the package folder")
    try:
        spec = json.loads((folder / spec_name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConnectorError(f"{folder / spec_name}: cannot read the OpenAPI description ({exc})") from None
    return build(meta, spec, where=str(meta_path), folder=folder)
