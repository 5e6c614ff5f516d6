"""GraphQL request -> operations, for APIs such as Linear whose one endpoint carries every action. Pure.

The operation is read from the parsed document, never from the client's `operationName` alone: aliases are
seen through (`a: issueCreate` is issueCreate), fragments on the root type are expanded, a mutation named like
a query is a mutation, and a batch yields every operation in it. Anything that could be read two ways
(several operations and no name, a name that fits none or several) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError, parse
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from connectors.matcher import Refused, parse_json_body

MAX_QUERY_BYTES = 100_000
MAX_BATCH = 50


@dataclass(frozen=True, slots=True)
class Operation:
    type: str  # query | mutation | subscription
    name: str | None
    root_fields: tuple[str, ...]  # real field names, aliases resolved, sorted
    variables: dict[str, Any]


def _root_fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], seen: frozenset[str]
) -> set[str]:
    fields: set[str] = set()
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value != "__typename":
                fields.add(selection.name.value)
        elif isinstance(selection, InlineFragmentNode):
            fields |= _root_fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen or name not in fragments:
                raise Refused(f"fragment {name!r} is unknown or cyclic")
            fields |= _root_fields(fragments[name].selection_set, fragments, seen | {name})
    return fields


def _one(item: Any) -> Operation:
    if not isinstance(item, dict) or not isinstance(item.get("query"), str):
        raise Refused("a GraphQL request needs a query string")
    query: str = item["query"]
    if len(query.encode()) > MAX_QUERY_BYTES:
        raise Refused("the GraphQL document is too large")
    try:
        document: DocumentNode = parse(query, no_location=True)
    except GraphQLError as exc:
        raise Refused(f"the GraphQL document does not parse: {exc.message}") from None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    wanted = item.get("operationName")
    if wanted is not None and not isinstance(wanted, str):
        raise Refused("operationName must be a string")
    if wanted:
        chosen = [op for op in operations if op.name is not None and op.name.value == wanted]
    else:
        chosen = operations if len(operations) == 1 else []
    if len(chosen) != 1:
        raise Refused("cannot tell which GraphQL operation runs")
    op = chosen[0]
    variables = item.get("variables") or {}
    if not isinstance(variables, dict):
        raise Refused("variables must be an object")
    fields = _root_fields(op.selection_set, fragments, frozenset())
    if not fields:
        raise Refused("the operation selects nothing")
    return Operation(
        type=op.operation.value,
        name=op.name.value if op.name else None,
        root_fields=tuple(sorted(fields)),
        variables=variables,
    )


def graphql_operations(body: bytes) -> list[Operation]:
    """Every operation a GraphQL POST body would run (one, or several for a batch)."""
    payload = parse_json_body(body)
    items = payload if isinstance(payload, list) else [payload]
    if not items or len(items) > MAX_BATCH:
        raise Refused("a GraphQL batch must hold 1 to 50 operations")
    return [_one(item) for item in items]
