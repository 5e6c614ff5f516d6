"""Whether a connector may join the installed ones: one connector per host, and no operation served twice. Pure.

The data plane picks a request's connector by host (whose credential, auth scheme and enablement apply) and
its action with the matcher, so a second connector on a host already served would either make the matcher
refuse every request to that host (the same operation twice) or run the other connector's actions with this
connector's credential. Both are refused when the package is installed, not found out by the first request.

Overlap is judged by the matcher itself: for each pair of routes that could meet (same host, method and number
of segments) a witness request is built (each segment the more specific of the two templates), and it is an
overlap when each connector's own `Router` identifies the witness as one of its actions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from connectors.matcher import Refused, Route, Router, normalize_host
from connectors.package import Connector

_PARAM = "{"
_SEGMENT_SAFE = "!$&'()*+,=:@-._~"


@dataclass(frozen=True, slots=True)
class Overlap:
    """A request (METHOD host PATH) that two connectors would each identify as one of their actions."""

    host: str
    method: str
    path: str  # the witness: a concrete path both identify
    template: str  # the installed connector's path template it matched
    ours: str  # the action id of the connector being installed
    theirs: str  # the action id of the installed one


@dataclass(frozen=True, slots=True)
class Clash:
    """The connector being installed shares HOSTS with the installed connector OTHER."""

    other: Connector
    hosts: tuple[str, ...]
    overlaps: tuple[Overlap, ...]


def _hosts(connector: Connector) -> set[str]:
    return {normalize_host(h) for h in connector.hosts}


def _sample(segment: str, route: Route) -> str:
    """A concrete segment the template SEGMENT of ROUTE matches (parameters filled with a value of their type)."""
    if _PARAM not in segment:
        return segment
    types = {p.name: p.type for p in route.path_params}
    out, rest = "", segment
    while "{" in rest and "}" in rest:
        head, _, tail = rest.partition("{")
        name, _, rest = tail.partition("}")
        out += head + ("true" if types.get(name) == "boolean" else "1")
    return out + rest


def _meet(a: Route, b: Route) -> str | None:
    """A path both templates might match (the matcher decides), or None when a literal differs."""
    out = []
    for left, right in zip(a.path.strip("/").split("/"), b.path.strip("/").split("/"), strict=True):
        if _PARAM not in left and _PARAM not in right:
            if left != right:
                return None
            out.append(left)
        elif _PARAM not in left:
            out.append(left)
        elif _PARAM not in right:
            out.append(right)
        elif left.startswith("{") and left.endswith("}") and left.count("{") == 1:
            out.append(_sample(right, b))  # a whole-segment parameter takes what the other needs
        else:
            out.append(_sample(left, a))
    return "/" + "/".join(quote(s, safe=_SEGMENT_SAFE) for s in out)


def _shape(route: Route) -> int:
    return len([s for s in route.path.split("/") if s])


def overlaps(ours: Connector, theirs: Connector) -> list[Overlap]:
    """Requests each of the two connectors would identify as one of its actions (one per pair of actions)."""
    shared = _hosts(ours) & _hosts(theirs)
    if not shared:
        return []
    our_router, their_router = Router(ours.routes), Router(theirs.routes)
    buckets: dict[tuple[str, int], list[Route]] = defaultdict(list)
    for route in theirs.routes:
        buckets[(route.method.upper(), _shape(route))].append(route)
    found: dict[tuple[str, str], Overlap] = {}
    for route in ours.routes:
        for other in buckets.get((route.method.upper(), _shape(route)), []):
            path = _meet(route, other)
            if path is None:
                continue
            for host in sorted(shared):
                try:
                    mine = our_router.match(host=host, method=route.method, path=path)
                    yours = their_router.match(host=host, method=route.method, path=path)
                except Refused:
                    continue
                if mine is not None and yours is not None and (mine.action, yours.action) not in found:
                    found[(mine.action, yours.action)] = Overlap(
                        host, route.method.upper(), path, yours.route.path, mine.action, yours.action
                    )
    return sorted(found.values(), key=lambda o: (o.host, o.path, o.method))


def clashes(new: Connector, installed: Iterable[Connector]) -> list[Clash]:
    """The installed connectors NEW may not join; one of the same name is the one it replaces, never a clash."""
    out = []
    for other in installed:
        if other.name == new.name:
            continue
        shared = _hosts(new) & _hosts(other)
        if shared:
            out.append(Clash(other, tuple(sorted(shared)), tuple(overlaps(new, other))))
    return out


def clash_message(new: Connector, clash: Clash, *, other_where: str) -> str:
    """One line: what clashes, and the two ways out."""
    hosts = ", ".join(clash.hosts)
    other = clash.other.name
    if clash.overlaps:
        first = clash.overlaps[0]
        more = len(clash.overlaps) - 1
        what = (
            f"{len(clash.overlaps)} of its operations are {other}'s already "
            f"({first.method} {first.template} is {first.theirs} and {first.ours}"
            + (f", and {more} more)" if more else ")")
        )
    else:
        what = "no operation is shared, but a host has one connector, whose credential every request to it carries"
    return (
        f"{new.name} would serve {hosts}, which the {other} connector ({other_where}) serves: {what}. "
        f"To replace {other}, name this connector {other} (`--name {other}` on import); "
        f"otherwise give it a host no other connector serves."
    )
