"""Policy decisions for the data plane: Cedar over (user, connector action, arguments). Pure: no Django.

The Cedar model of one request:

- principal ``Aileron::User::"<user uuid>"``, whose parents are ``Aileron::Team::"<team uuid>"`` for each team
  the user belongs to in the organization (so ``principal in Aileron::Team::"…"`` scopes a policy to a team);
- action ``Aileron::Action::"<connector>.<action>"``, e.g. ``Aileron::Action::"stripe.create-refund"``;
- resource ``Aileron::Connector::"<connector>"``;
- context ``{"args": …, "agent": str, "session": str, "project": str ("" without a project)}``. The arguments
  are sanitized for Cedar: strings, integers, booleans, lists (Cedar sets) and records are kept; floats become
  strings (Cedar has none); ``None`` is dropped; integers beyond 64 bits become strings; a record that would
  read as one of Cedar's JSON escapes (``__entity``, ``__extn``, ``__expr``) becomes its JSON text.

Semantics:

- A built-in ``permit(principal, action, resource);`` is always present: a matched connector action is allowed
  unless something says otherwise. Unmatched requests never reach the engine (the proxy denies them).
- Organization and team policies may be ``forbid`` with ``@outcome("deny")`` (the default without the
  annotation) or ``@outcome("approval_required")``, and ``permit`` only with ``@waive("approval")``, which lifts
  the connector's default approval requirement for what it matches. A waive cannot lift a forbid: in Cedar a
  matching forbid always wins. Any other permit, any other annotation or value, templates and parse errors
  are refused by `policy_validate` (and by `Engine`).
- Cedar Deny: "deny" if any forbid that matched has the deny outcome, else "approval_required".
  Cedar Allow: "approval_required" if the action needs approval by default and no matching permit waives
  it, else "allow".
- Fail closed: Cedar skips a policy whose evaluation errors (``context.args.amount > 5`` when ``amount`` is
  missing or a string). A skipped forbid would silently allow, so if any policy errored the decision is
  "deny", naming the policy and saying its evaluation failed. Write guards: ``context.args has amount &&
  context.args.amount > 5``.

Policies are parsed once per `Engine`; `decide` costs one Cedar evaluation (``python bench/policy_bench.py``).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

import cedarpy

ALLOW = "allow"
DENY = "deny"
APPROVAL_REQUIRED = "approval_required"

USER, TEAM, ACTION, CONNECTOR = "Aileron::User", "Aileron::Team", "Aileron::Action", "Aileron::Connector"
ENTITY_TYPES = (USER, TEAM, ACTION, CONNECTOR)  # a policy about any other type can never match

BUILTIN_PERMIT = "permit(principal, action, resource);"
_BUILTIN_ID = "aileron.builtin"
_OUTCOMES = frozenset({DENY, APPROVAL_REQUIRED})
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_MAX_DEPTH = 32
_NAMED = 3  # policies named in a reason; policy_ids lists them all
_CEDAR_ESCAPES = frozenset({"__entity", "__extn", "__expr"})
_POLICY_IN_ERROR = re.compile(r"policy `([^`]+)`")


class PolicyError(ValueError):
    """A policy Aileron refuses; the message is one line and names the policy."""


@dataclass(frozen=True, slots=True)
class PolicyDoc:
    id: str
    name: str
    cedar: str


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # "allow" | "deny" | "approval_required"
    reason: str  # a human sentence
    policy_ids: tuple[str, ...]  # the PolicyDoc ids that determined it


@dataclass(frozen=True, slots=True)
class _Statement:
    doc: PolicyDoc
    position: int  # of the doc in the Engine's list: decisions name policies in this order
    effect: str  # "permit" | "forbid"
    outcome: str  # forbid: DENY | APPROVAL_REQUIRED; permit: "waive"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _statements(cedar: str, label: str) -> list[dict[str, Any]]:
    """The Cedar JSON of each statement of one policy text, in order; PolicyError if Aileron refuses it."""
    try:
        parsed = json.loads(cedarpy.policies_to_json_str(cedar))
    except ValueError as exc:
        raise PolicyError(f"{label} does not parse: {_one_line(str(exc))}") from None
    if parsed.get("templates"):
        raise PolicyError(f"{label} is a template (?principal or ?resource slots); write a concrete policy")
    static: dict[str, Any] = parsed.get("staticPolicies") or {}
    if not static:
        raise PolicyError(f"{label} contains no policy statement")
    ordered = sorted(static.items(), key=lambda item: int(item[0].removeprefix("policy") or 0))
    out = []
    for n, (_, body) in enumerate(ordered, start=1):
        where = label if len(ordered) == 1 else f"{label} (statement {n})"
        _check_statement(body, where)
        out.append(body)
    return out


def _check_statement(body: Mapping[str, Any], where: str) -> None:
    annotations: Mapping[str, Any] = body.get("annotations") or {}
    effect = body.get("effect")
    if effect == "forbid":
        unknown = sorted(set(annotations) - {"outcome"})
        if unknown:
            raise PolicyError(f"{where}: a forbid takes only @outcome(...), not @{unknown[0]}")
        outcome = annotations.get("outcome", DENY)
        if outcome not in _OUTCOMES:
            raise PolicyError(f'{where}: @outcome must be "deny" or "approval_required", not {outcome!r}')
    elif effect == "permit":
        if annotations.get("waive") != "approval" or set(annotations) != {"waive"}:
            raise PolicyError(
                f'{where}: a permit must be @waive("approval") (everything matched is permitted already); '
                "use forbid to restrict"
            )
    else:
        raise PolicyError(f"{where}: unknown effect {effect!r}")


def policy_validate(cedar: str, *, name: str = "") -> None:
    """Raise PolicyError unless CEDAR is a policy text Aileron accepts (see the module docstring)."""
    _statements(cedar, f'policy "{name}"' if name else "the policy")


def _entity_refs(node: Any, out: list[tuple[str, str | None]]) -> None:
    """Every entity a Cedar JSON policy names, in its scope or its conditions: (type, id), or (type, None) for
    an `is TYPE` test."""
    if isinstance(node, list):
        for item in node:
            _entity_refs(item, out)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        named = [value] if key in ("entity", "__entity") else value if key == "entities" else []
        uids = isinstance(named, list) and all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in named)
        if named and uids:
            out.extend((e["type"], str(e.get("id", ""))) for e in named)
        elif key == "entity_type" and isinstance(value, str):
            out.append((value, None))
        else:
            _entity_refs(value, out)


def policy_references(cedar: str, *, name: str = "") -> list[tuple[str, str]]:
    """The (type, id) of each entity CEDAR names, in order, without repeats; PolicyError for a type that is not
    one of Aileron's (such a policy can never match). CEDAR must pass `policy_validate` first."""
    label = f'policy "{name}"' if name else "the policy"
    found: list[tuple[str, str | None]] = []
    _entity_refs(json.loads(cedarpy.policies_to_json_str(cedar)).get("staticPolicies"), found)
    for kind, _ in found:
        if kind not in ENTITY_TYPES:
            suffix = "::" + kind.rsplit("::", 1)[-1]
            like = [t for t in ENTITY_TYPES if t.endswith(suffix)] or get_close_matches(kind, ENTITY_TYPES, n=1)
            hint = f"; did you mean {like[0]}?" if like else f" ({', '.join(ENTITY_TYPES)})"
            raise PolicyError(f"{label}: {kind} is not an entity type of Aileron, so it never matches{hint}")
    return list(dict.fromkeys((kind, ref) for kind, ref in found if ref is not None))


def _cedar_value(value: Any, depth: int) -> Any:
    """VALUE as Cedar can take it, or None to drop it."""
    if value is None:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _I64_MIN <= value <= _I64_MAX else str(value)
    if isinstance(value, float):
        return str(int(value)) if math.isfinite(value) and value.is_integer() else str(value)
    if depth >= _MAX_DEPTH:
        return json.dumps(value, default=str)
    if isinstance(value, Mapping):
        if _CEDAR_ESCAPES & {str(k) for k in value}:
            return json.dumps(value, default=str, sort_keys=True)
        return _cedar_record(value, depth + 1)
    if isinstance(value, list | tuple):
        items = (_cedar_value(v, depth + 1) for v in value)
        return [v for v in items if v is not None]
    return str(value)


def _cedar_record(record: Mapping[Any, Any], depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in record.items():
        value = _cedar_value(raw, depth)
        if value is not None:
            out[str(key)] = value
    return out


def cedar_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The action's arguments sanitized for Cedar's context (see the module docstring)."""
    return _cedar_record(args)


class Engine:
    """One organization's policies (as they apply to one session), parsed once, decided per request."""

    def __init__(self, policies: Sequence[PolicyDoc]) -> None:
        static: dict[str, Any] = {}
        self._statements: dict[str, _Statement] = {}
        for i, doc in enumerate(policies):
            for n, body in enumerate(_statements(doc.cedar, f'policy "{doc.name}"')):
                statement_id = f"p{i}.{n}"
                static[statement_id] = body
                annotations = body.get("annotations") or {}
                outcome = "waive" if body["effect"] == "permit" else annotations.get("outcome", DENY)
                self._statements[statement_id] = _Statement(doc=doc, position=i, effect=body["effect"], outcome=outcome)
        static[_BUILTIN_ID] = json.loads(cedarpy.policies_to_json_str(BUILTIN_PERMIT))["staticPolicies"]["policy0"]
        try:
            self._set = cedarpy.PolicySet.from_json_str(
                json.dumps({"staticPolicies": static, "templates": {}, "templateLinks": []})
            )
        except ValueError as exc:  # each statement parsed alone; this would be a cedarpy inconsistency
            raise PolicyError(f"the policy set does not load: {_one_line(str(exc))}") from None

    @property
    def policy_set(self) -> Any:
        """The pre-parsed cedarpy PolicySet (for benchmarks and diagnostics)."""
        return self._set

    def request(
        self,
        *,
        user_id: str,
        team_ids: Sequence[str],
        session_id: str,
        agent: str,
        project_id: str | None,
        connector: str,
        action: str,
        args: Mapping[str, Any],
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The Cedar request and entities for one action (see the module docstring)."""
        principal = {"type": USER, "id": user_id}
        entities = [{"uid": principal, "attrs": {}, "parents": [{"type": TEAM, "id": t} for t in team_ids]}]
        request = {
            "principal": principal,
            "action": {"type": ACTION, "id": action},
            "resource": {"type": CONNECTOR, "id": connector},
            "context": {"args": cedar_args(args), "agent": agent, "session": session_id, "project": project_id or ""},
        }
        return request, entities

    def decide(
        self,
        *,
        user_id: str,
        team_ids: Sequence[str],
        session_id: str,
        agent: str,
        project_id: str | None,
        connector: str,
        action: str,
        args: Mapping[str, Any],
        default_approval: bool,
    ) -> Decision:
        if not self._statements:
            # Only the built-in permit: Cedar would allow, so the connector's default alone decides.
            if default_approval:
                return Decision(APPROVAL_REQUIRED, f"{action} needs approval by default", ())
            return Decision(ALLOW, "no policy forbids it", ())
        request, entities = self.request(
            user_id=user_id,
            team_ids=team_ids,
            session_id=session_id,
            agent=agent,
            project_id=project_id,
            connector=connector,
            action=action,
            args=args,
        )
        result = cedarpy.is_authorized(request, self._set, entities)
        matched = [self._statements[r] for r in result.diagnostics.reasons if r in self._statements]
        denying = [s for s in matched if s.effect == "forbid" and s.outcome == DENY]
        if denying:
            return Decision(DENY, f"{_names(denying)} {_verb(denying, 'forbid')} it", _ids(denying))
        errors: list[str] = list(result.diagnostics.errors)
        if errors:
            return self._failed(errors)
        decision = result.decision
        if decision == cedarpy.Decision.Deny:
            holding = [s for s in matched if s.effect == "forbid"]
            if holding:
                return Decision(
                    APPROVAL_REQUIRED, f"{_names(holding)} {_verb(holding, 'require')} approval", _ids(holding)
                )
            return Decision(DENY, "no policy permits it", ())
        if decision != cedarpy.Decision.Allow:
            return Decision(DENY, "the request could not be evaluated, so it is denied (fail closed)", ())
        if not default_approval:
            return Decision(ALLOW, "no policy forbids it", ())
        waiving = [s for s in matched if s.effect == "permit"]
        if waiving:
            reason = f"{_names(waiving)} {_verb(waiving, 'waive')} the approval {action} needs by default"
            return Decision(ALLOW, reason, _ids(waiving))
        return Decision(APPROVAL_REQUIRED, f"{action} needs approval by default", ())

    def _failed(self, errors: list[str]) -> Decision:
        failing: list[_Statement] = []
        for error in errors:
            found = _POLICY_IN_ERROR.search(error)
            if found and found.group(1) in self._statements:
                failing.append(self._statements[found.group(1)])
        detail = _one_line(errors[0].split(":", 1)[-1]) if failing else _one_line(errors[0])
        if not failing:
            return Decision(DENY, f"the request could not be evaluated ({detail}), so it is denied (fail closed)", ())
        return Decision(
            DENY,
            f"the evaluation of {_names(failing)} failed ({detail}), so the action is denied (fail closed)",
            _ids(failing),
        )


def _docs(statements: Sequence[_Statement]) -> list[PolicyDoc]:
    seen: dict[str, tuple[int, PolicyDoc]] = {}
    for s in statements:
        seen.setdefault(s.doc.id, (s.position, s.doc))
    return [doc for _, doc in sorted(seen.values(), key=lambda item: item[0])]


def _ids(statements: Sequence[_Statement]) -> tuple[str, ...]:
    return tuple(d.id for d in _docs(statements))


def _verb(statements: Sequence[_Statement], verb: str) -> str:
    return verb + "s" if len(_docs(statements)) == 1 else verb


def _names(statements: Sequence[_Statement]) -> str:
    docs = _docs(statements)
    quoted = ", ".join(f'"{d.name}"' for d in docs[:_NAMED])
    if len(docs) > _NAMED:
        quoted += f" and {len(docs) - _NAMED} more"
    return f"policy {quoted}" if len(docs) == 1 else f"policies {quoted}"


# --- egress ------------------------------------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def egress_pattern_validate(pattern: str) -> None:
    """Raise PolicyError unless PATTERN is ``host.example`` or ``*.host.example`` (any case)."""
    if not isinstance(pattern, str) or not pattern:
        raise PolicyError("an egress pattern must be a non-empty host name")
    shown = pattern[:80]
    lowered = pattern.lower()
    wildcard = lowered.startswith("*.")
    host = lowered[2:] if wildcard else lowered
    if "*" in host:
        raise PolicyError(f"egress pattern {shown!r}: the only wildcard is a leading '*.' (any subdomain)")
    if len(host) > 253:
        raise PolicyError(f"egress pattern {shown!r} is longer than a host name may be (253)")
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise PolicyError(
            f"egress pattern {shown!r} is not a host name (letters, digits, '-', dots; no scheme, port or path)"
        )
    if wildcard and len(labels) < 2:
        raise PolicyError(f"egress pattern {shown!r} is too broad: name at least a domain under a top-level one")


# Ports a TCP rule may not name: HTTP and HTTPS go through the proxy's own checks (actions, credentials, scans).
TCP_PORTS_OF_THE_PROXY = frozenset({80, 443})


def tcp_rule_parse(rule: str) -> tuple[str, int]:
    """(host pattern, port) of a rule ``host.example:22`` or ``*.host.example:5432``; PolicyError otherwise."""
    if not isinstance(rule, str) or not rule:
        raise PolicyError("a TCP rule must be host:port, e.g. github.com:22")
    shown = rule[:80]
    host, sep, port_text = rule.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not port_text.isascii():
        raise PolicyError(f"TCP rule {shown!r} must be host:port, e.g. github.com:22 or *.db.example.com:5432")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise PolicyError(f"TCP rule {shown!r}: the port must be between 1 and 65535")
    if port in TCP_PORTS_OF_THE_PROXY:
        raise PolicyError(
            f"TCP rule {shown!r}: ports 80 and 443 carry HTTP, which goes through the proxy's own checks "
            "(use the egress allow list, or plain_http for package mirrors)"
        )
    try:
        egress_pattern_validate(host)
    except PolicyError as exc:
        raise PolicyError(f"TCP rule {shown!r}: {exc}") from None
    if _internal_host(host.lower()):
        raise PolicyError(
            f"TCP rule {shown!r}: loopback, private, link-local and metadata addresses are never reached (an "
            "internal database is named by its host, and the data plane's AILERON_UPSTREAM_RESOLVE maps it)"
        )
    return host.lower(), port


def _internal_host(host: str) -> bool:
    """A host the proxy would never connect to, seen already in the rule's text: localhost, or an IP literal
    that is not global (the proxy checks every resolved address again at connect time)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global


def tcp_allows(rules: Sequence[str], host: str, port: int) -> str | None:
    """The first rule of RULES that lets a raw TCP connection reach HOST:PORT, or None (denied by default)."""
    for rule in rules:
        pattern, _, port_text = rule.rpartition(":")
        if port_text.isdigit() and int(port_text) == port and egress_allows((pattern,), host):
            return rule
    return None


def egress_allows(patterns: Sequence[str], host: str) -> bool:
    """Whether HOST matches one of PATTERNS: ``example.com`` exactly, ``*.example.com`` any subdomain of it
    (not the apex). Case-insensitive; a trailing dot on HOST is ignored."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        p = pattern.lower()
        if p.startswith("*."):
            suffix = p[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == p:
            return True
    return False
