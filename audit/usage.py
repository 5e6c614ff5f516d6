"""Fleet visibility: requests, refusals, errors, latency, LLM tokens and spend, and approvals, added up per team,
project, agent, user, connector, action or model, over a time range and optionally per interval.

Read from the audit records (every request, with its usage and cost as the data plane priced it) and the
approvals. Rows are streamed and added up here rather than in SQL so that SQLite and PostgreSQL give the same
answer to the cent (percentiles included, which SQLite has no function for).
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django_scopes import scopes_disabled

from approvals.models import Approval
from audit.models import AuditDecision, AuditKind, AuditRecord
from tenants.models import Organization, Project, Team, User

GROUPS = ("team", "project", "agent", "user", "connector", "action", "model")
INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
MAX_BUCKETS = 2000  # groups x intervals in one answer

_RECORD_KEY = {
    "team": "team_id",
    "project": "project_id",
    "agent": "agent",
    "user": "user_id",
    "connector": "connector",
    "action": "action",
    "model": "usage__model",
}
_APPROVAL_KEY = {
    "team": "request_id",  # an approval's team is that of the held request's audit record
    "project": "project_id",
    "agent": "agent",
    "user": "requester_id",
    "connector": "connector",
    "action": "action",
    "model": None,  # an approval is of an action, not of a model
}


class UsageError(ValueError):
    """The question cannot be answered as asked (the message says why)."""


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class _Tally:
    requests: int = 0
    refusals: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced_calls: int = 0  # LLM calls whose model had no price
    approvals: int = 0
    decisions: list[float] = field(default_factory=list)  # seconds from held to decided

    def figures(self) -> dict[str, Any]:
        def rounded(value: float | None, places: int = 1) -> float | None:
            return None if value is None else round(value, places)

        return {
            "requests": self.requests,
            "refusals": self.refusals,
            "failed": self.failed,
            "error_rate": round(self.failed / self.requests, 4) if self.requests else 0.0,
            "latency_ms_p50": rounded(percentile(self.latencies, 50)),
            "latency_ms_p95": rounded(percentile(self.latencies, 95)),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": str(self.cost.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)),
            "unpriced_calls": self.unpriced_calls,
            "approvals_held": self.approvals,
            "decision_seconds_p50": rounded(percentile(self.decisions, 50)),
            "decision_seconds_p95": rounded(percentile(self.decisions, 95)),
        }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)  # intervals start on the hour, at midnight UTC, on Mondays


def _bucket(moment: datetime, since: datetime, step: timedelta | None) -> datetime | None:
    if step is None:
        return None
    return _MONDAY + step * ((moment - _MONDAY) // step)


def usage_report(
    *,
    organization: Organization,
    group_by: str,
    since: datetime,
    until: datetime,
    interval: str | None = None,
    user: User | None = None,
) -> dict[str, Any]:
    """The organization's usage from SINCE (inclusive) to UNTIL (exclusive) per GROUP_BY value (and per INTERVAL
    when given). USER: only that person's own requests and approvals (a member without audit.read)."""
    if group_by not in GROUPS:
        raise UsageError(f"group_by must be one of {', '.join(GROUPS)}")
    if until <= since:
        raise UsageError("until must be after since")
    step = None
    if interval is not None:
        if interval not in INTERVALS:
            raise UsageError(f"interval must be one of {', '.join(INTERVALS)}")
        step = INTERVALS[interval]
        if (until - since) / step > MAX_BUCKETS:
            raise UsageError(f"that is more than {MAX_BUCKETS} {interval}s: narrow since..until or widen the interval")
    tallies: dict[tuple[Any, datetime | None], _Tally] = defaultdict(_Tally)
    with scopes_disabled():  # every query names the organization
        records = AuditRecord.objects.filter(organization=organization, at__gte=since, at__lt=until, has_attempt=True)
        approvals = Approval.objects.filter(organization=organization, created_at__gte=since, created_at__lt=until)
        if user is not None:
            records, approvals = records.filter(user=user), approvals.filter(requester=user)
        _add_records(tallies, records, _RECORD_KEY[group_by], since, step)
        if _APPROVAL_KEY[group_by] is not None:
            _add_approvals(tallies, approvals, str(_APPROVAL_KEY[group_by]), since, step)
        names = _names(group_by, {key for key, _ in tallies}, organization)
    if len(tallies) > MAX_BUCKETS:
        raise UsageError(f"more than {MAX_BUCKETS} groups x intervals: narrow since..until or widen the interval")
    groups: dict[Any, dict[str, Any]] = {}
    for (key, bucket), tally in sorted(tallies.items(), key=lambda item: (str(item[0][0]), item[0][1] or since)):
        entry = groups.setdefault(key, {"key": _plain(key), "name": names.get(key, _plain(key)), "series": []})
        if bucket is None:
            entry.update(tally.figures())
        else:
            entry["series"].append({"start": bucket.astimezone(UTC).isoformat(), **tally.figures()})
    if step is not None:
        _totals(groups, tallies)
    return {
        "group_by": group_by,
        "since": since.astimezone(UTC).isoformat(),
        "until": until.astimezone(UTC).isoformat(),
        "interval": interval,
        "groups": sorted(groups.values(), key=lambda g: (-Decimal(g["cost_usd"]), -g["requests"], str(g["key"]))),
    }


def _totals(groups: dict[Any, dict[str, Any]], tallies: dict[tuple[Any, datetime | None], _Tally]) -> None:
    """Each group's figures over the whole range, beside its series (percentiles over all its values)."""
    merged: dict[Any, _Tally] = defaultdict(_Tally)
    for (key, _), tally in tallies.items():
        into = merged[key]
        for name in ("requests", "refusals", "failed", "input_tokens", "output_tokens", "cache_read_tokens",
                     "cache_write_tokens", "cost", "unpriced_calls", "approvals"):  # fmt: skip
            setattr(into, name, getattr(into, name) + getattr(tally, name))
        into.latencies.extend(tally.latencies)
        into.decisions.extend(tally.decisions)
    for key, tally in merged.items():
        groups[key].update(tally.figures())


def _add_records(
    tallies: dict[tuple[Any, datetime | None], _Tally],
    records: Any,
    key_field: str,
    since: datetime,
    step: timedelta | None,
) -> None:
    rows = records.values_list(key_field, "at", "kind", "decision", "upstream_status", "error", "latency_ms", "usage")
    for key, at, kind, decision, status, error, latency, usage in rows.iterator(chunk_size=5000):
        tally = tallies[(key, _bucket(at, since, step))]
        tally.requests += 1
        if kind == AuditKind.REFUSED or decision == AuditDecision.DENY:
            tally.refusals += 1
        elif decision == AuditDecision.ERROR or error or (status is not None and status >= 500):
            tally.failed += 1
        if latency is not None:
            tally.latencies.append(latency)
        if isinstance(usage, dict):
            tally.input_tokens += _count(usage.get("input_tokens"))
            tally.output_tokens += _count(usage.get("output_tokens"))
            tally.cache_read_tokens += _count(usage.get("cache_read_tokens"))
            tally.cache_write_tokens += _count(usage.get("cache_write_tokens"))
            cost = usage.get("cost_usd")
            if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0:
                tally.cost += Decimal(repr(cost))
            else:
                tally.unpriced_calls += 1


def _add_approvals(
    tallies: dict[tuple[Any, datetime | None], _Tally],
    approvals: Any,
    key_field: str,
    since: datetime,
    step: timedelta | None,
) -> None:
    rows = list(approvals.values_list(key_field, "created_at", "decided_at"))
    if key_field == "request_id":  # by team: the team the control plane gave the held request's record
        teams: dict[Any, Any] = {}
        ids = [key for key, _, _ in rows]
        for start in range(0, len(ids), 1000):
            found = AuditRecord.objects.filter(pk__in=ids[start : start + 1000]).values_list("pk", "team_id")
            teams.update(found)
        rows = [(teams.get(key), created, decided) for key, created, decided in rows]
    for key, created, decided in rows:
        tally = tallies[(key, _bucket(created, since, step))]
        tally.approvals += 1
        if decided is not None:
            tally.decisions.append((decided - created).total_seconds())


def _plain(key: Any) -> Any:
    return str(key) if isinstance(key, uuid.UUID) else key


def _names(group_by: str, keys: Iterable[Any], organization: Organization) -> dict[Any, str]:
    """Human labels for the ids a group is keyed by (a deleted team or project keeps its id as the label)."""
    ids = [k for k in keys if k is not None]
    if group_by == "team":
        return dict(Team.objects.filter(organization=organization, pk__in=ids).values_list("pk", "name"))
    if group_by == "project":
        return dict(Project.objects.filter(organization=organization, pk__in=ids).values_list("pk", "name"))
    if group_by == "user":
        return dict(User.objects.filter(pk__in=ids).values_list("pk", "email"))
    return {}
