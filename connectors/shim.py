"""Connector shims: `github`, `slack`, `linear`, `stripe`, … — one engine driven by the installed connectors.

    github --help                         the connector's actions
    github create-issue --help            the action's arguments (from the spec)
    github create-issue --repo o/r --title x

Arguments are validated before anything is sent; the request goes over HTTPS (through HTTPS_PROXY when set,
so Aileron's proxy identifies it, applies policy and injects the credential); the JSON response is printed.
Shims hold no credentials. AILERON_UPSTREAM_<NAME> (e.g. AILERON_UPSTREAM_GITHUB=https://127.0.0.1:8443)
points a shim at another base URL, for tests and private upstreams.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from connectors.package import Action, Connector, ConnectorError
from connectors.registry import installed

TIMEOUT = 60.0


class ShimError(Exception):
    pass


def _home() -> Path:
    return Path(os.environ.get("AILERON_HOME") or Path.home() / ".aileron").expanduser()


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr)
    sys.exit(code)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def connector_help(connector: Connector) -> str:
    width = max((len(a.name) for a in connector.actions), default=0)
    lines = [f"usage: {connector.name} ACTION [--ARG VALUE ...]", "", connector.description, "", "actions:"]
    lines += [
        f"  {a.name:<{width}}  {a.description}{'  [approval required]' if a.approval == 'always' else ''}"
        for a in connector.actions
    ]
    lines += ["", f"Run `{connector.name} ACTION --help` for an action's arguments."]
    return "\n".join(lines)


def action_help(connector: Connector, action: Action) -> str:
    props: dict[str, Any] = action.arguments.get("properties", {})
    required = set(action.arguments.get("required", []))
    lines = [
        f"usage: {connector.name} {action.name} [options]",
        "",
        action.description,
        "",
        f"{action.method} https://{connector.hosts[0]}{action.path}",
        f"approval: {action.approval}; idempotent: {'yes' if action.idempotent else 'no'}",
        "",
        "arguments:",
    ]
    for name, prop in props.items():
        need = "required" if name in required else "optional"
        doc = prop.get("description", "").splitlines()[0] if prop.get("description") else ""
        lines.append(f"  {_flag(name)} {prop.get('type', 'string').upper()}  ({prop.get('in')}, {need}) {doc}"[:160])
    if "owner" in props and "repo" in props:
        lines.append("  --repo OWNER/REPO  sets both --owner and --repo")
    lines.append("\nValues of type array or object are JSON: --labels '[\"bug\"]'.")
    return "\n".join(lines)


def parse_args(action: Action, argv: list[str]) -> dict[str, Any]:
    props: dict[str, Any] = action.arguments.get("properties", {})
    by_flag = {_flag(n): n for n in props}
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        flag, sep, inline = token.partition("=")
        if flag not in by_flag and flag != "--repo":
            raise ShimError(f"unknown argument {flag} for {action.name} (see --help)")
        if sep:
            raw = inline
            i += 1
        elif i + 1 < len(argv):
            raw = argv[i + 1]
            i += 2
        else:
            raise ShimError(f"{flag} needs a value")
        if flag == "--repo" and "/" in raw and "owner" in props:
            values["owner"], values["repo"] = raw.split("/", 1)
            continue
        name = by_flag[flag]
        values[name] = _typed(name, raw, props[name].get("type", "string"))
    missing = [n for n in action.arguments.get("required", []) if n not in values]
    if missing:
        raise ShimError("missing " + ", ".join(_flag(n) for n in missing))
    return values


def _typed(name: str, raw: str, kind: str) -> Any:
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        if kind == "boolean":
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
        if kind in ("array", "object", "any") or kind.startswith("["):
            return json.loads(raw) if raw[:1] in "[{" else raw
    except (ValueError, json.JSONDecodeError):
        raise ShimError(f"{_flag(name)} must be {kind}, got {raw!r}") from None
    return raw


def build_request(connector: Connector, action: Action, values: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(method, url, httpx keyword arguments) for the action: exactly what the spec describes."""
    props: dict[str, Any] = action.arguments.get("properties", {})
    base = os.environ.get(
        f"AILERON_UPSTREAM_{connector.name.upper().replace('-', '_')}", f"https://{connector.hosts[0]}"
    ).rstrip("/")
    path = action.path
    query: dict[str, Any] = {}
    body: dict[str, Any] = {}
    for name, value in values.items():
        where = props.get(name, {}).get("in", "body")
        if where == "path":
            path = path.replace("{" + name + "}", quote(str(value), safe=""))
        elif where == "query":
            query[name] = str(value).lower() if isinstance(value, bool) else value
        else:
            body[name] = value
    if connector.graphql_path is not None:
        return "POST", base + connector.graphql_path, {"json": graphql_document(connector, action, values)}
    kwargs: dict[str, Any] = {"params": query} if query else {}
    media = action.arguments.get("body")
    if media == "application/x-www-form-urlencoded":
        kwargs["data"] = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in body.items()}
    elif body or media == "application/json":
        kwargs["json"] = body
    return action.method, base + path, kwargs


def graphql_document(connector: Connector, action: Action, values: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL request for one root field, with variables and a selection of the result's scalar fields."""
    from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, build_schema, get_named_type

    schema = build_schema(connector.graphql_schema or "")
    op_type, field_name = next(k for k, v in connector.graphql_actions.items() if v == action.id)
    root = schema.mutation_type if op_type == "mutation" else schema.query_type
    assert root is not None  # noqa: S101  (the package was validated against this schema)
    gql_field = root.fields[field_name]

    def selection(named: Any, depth: int) -> str:
        if not isinstance(named, GraphQLObjectType):
            return ""
        parts = []
        for name, sub in named.fields.items():
            inner = get_named_type(sub.type)
            if sub.args and any(isinstance(a.type, GraphQLNonNull) for a in sub.args.values()):
                continue
            if isinstance(inner, GraphQLObjectType):
                if depth > 0:
                    nested = selection(inner, depth - 1)
                    if nested:
                        parts.append(f"{name} {nested}")
            else:
                parts.append(name)
        return "{ " + " ".join(parts) + " }" if parts else ""

    del GraphQLList  # (imported for readers: lists are unwrapped by get_named_type)
    used = [n for n in gql_field.args if n in values]
    declared = ", ".join(f"${n}: {gql_field.args[n].type}" for n in used)
    call = ", ".join(f"{n}: ${n}" for n in used)
    document = (
        f"{op_type} Aileron{''.join(w.capitalize() for w in action.name.split('-'))}"
        f"{'(' + declared + ')' if declared else ''} "
        f"{{ {field_name}{'(' + call + ')' if call else ''} {selection(get_named_type(gql_field.type), 2)} }}"
    )
    return {"query": document, "variables": {n: values[n] for n in used}}


def run(connector_name: str, argv: list[str]) -> int:
    try:
        connectors = {c.name: c for c in installed(_home())}
    except ConnectorError as exc:
        _fail(f"a connector package is invalid: {exc}")
    connector = connectors.get(connector_name)
    if connector is None:
        _fail(f"the {connector_name} connector is not installed (`aileron connector list`)")
    if not argv or argv[0] in ("-h", "--help"):
        print(connector_help(connector))
        return 0
    action = next((a for a in connector.actions if a.name == argv[0]), None)
    if action is None:
        _fail(f"no action {argv[0]!r}; `{connector_name} --help` lists them", 2)
    if "-h" in argv[1:] or "--help" in argv[1:]:
        print(action_help(connector, action))
        return 0
    try:
        method, url, kwargs = build_request(connector, action, parse_args(action, argv[1:]))
    except ShimError as exc:
        _fail(str(exc), 2)
    try:
        with httpx.Client(
            timeout=TIMEOUT, trust_env=True, headers={"User-Agent": f"aileron-shim/{connector_name}"}
        ) as client:
            response = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"{method} {url} failed: {exc.__class__.__name__}: {exc}")
    try:
        payload: Any = response.json()
    except ValueError:
        payload = response.text
    if response.status_code >= 400:
        detail = payload.get("detail") or payload.get("message") if isinstance(payload, dict) else None
        _fail(f"{response.status_code} {response.reason_phrase}" + (f": {detail}" if detail else ""))
    print(json.dumps(payload, indent=2) if not isinstance(payload, str) else payload)
    return 0


def entry(name: str) -> None:
    """A shim command's whole run: the connector `name`, its action and arguments from sys.argv."""
    try:
        code = run(name, sys.argv[1:])
    except BrokenPipeError:  # `github --help | head`
        code = 0
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (stdout is gone; silence the interpreter's flush)
    sys.exit(code)


def github() -> None:
    entry("github")


def slack() -> None:
    entry("slack")


def linear() -> None:
    entry("linear")


def stripe() -> None:
    entry("stripe")
