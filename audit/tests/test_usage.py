"""Usage: the figures per team, project, agent, user, connector, action and model agree with the records."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django_scopes import scopes_disabled

from approvals.models import Approval
from approvals.services import approval_decide
from approvals.tests.factories import held_approval
from audit.services import audit_ingest
from audit.tests.factories import T0, attempt, outcome
from audit.usage import percentile
from conftest import Cast, client_for
from tenants import services
from tenants.models import ApiToken, Project

pytestmark = pytest.mark.django_db

SINCE = (T0 - timedelta(days=1)).isoformat()
UNTIL = (T0 + timedelta(days=1)).isoformat()


def llm(session: ApiToken, model: str, tokens: tuple[int, int, int, int], cost: float | None, latency: float) -> None:
    first = attempt(session, connector="anthropic", action="anthropic.create-message", args={})
    usage: dict[str, Any] = {
        "provider": "anthropic",
        "model": model,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_read_tokens": tokens[2],
        "cache_write_tokens": tokens[3],
        "cost_usd": cost,
    }
    result = audit_ingest(records=[first, outcome(session, first["id"], usage=usage, latency_ms=latency)])
    assert not result.rejected, result.rejected


def plain(session: ApiToken, **fields: Any) -> None:
    first = attempt(session, **{k: v for k, v in fields.items() if k not in ("upstream_status", "latency_ms")})
    halves = [first]
    if "upstream_status" in fields:
        halves.append(outcome(session, first["id"], upstream_status=fields["upstream_status"],
                              latency_ms=fields.get("latency_ms", 10.0)))  # fmt: skip
    assert not audit_ingest(records=halves).rejected


@pytest.fixture
def fleet(cast: Cast) -> dict[str, Any]:
    """Two teams, each with a project; alice's claude works for one, bob's codex for the other."""
    with scopes_disabled():
        owner = cast.alice.membership
        red = services.team_create(acting=owner, name="Red")
        blue = services.team_create(acting=owner, name="Blue")
        services.team_member_add(acting=owner, team=red, user_id=cast.alice.user.pk)
        services.team_member_add(acting=owner, team=blue, user_id=cast.bob.user.pk)
        web = services.project_create(acting=owner, name="Web", team=red)
        api = services.project_create(acting=owner, name="Api", team=blue)
        alice = services.session_token_create(membership=cast.alice.membership, name="claude", project=web).token
        bob = services.session_token_create(membership=cast.bob.membership, name="codex", project=api).token
    llm(alice, "claude-opus-5-5", (100, 50, 1000, 10), 0.0125, 800.0)
    llm(alice, "claude-opus-5-5", (200, 20, 0, 0), 0.0012, 1200.0)
    llm(bob, "claude-haiku-4-5", (10, 5, 0, 0), 0.000035, 300.0)
    llm(bob, "private-model", (7, 3, 0, 0), None, 100.0)  # no price source knew it
    plain(alice, decision="deny", kind="refused", connector="github", action="github.repos.delete")
    plain(bob, connector="github", action="github.issues.create", upstream_status=502, latency_ms=50.0)
    plain(bob, connector="github", action="github.issues.create", upstream_status=201, latency_ms=70.0)
    approval = held_approval(bob)
    plain(bob, id=str(approval.request_id), decision="approval_required", connector="stripe",
          action="stripe.create-refund")  # fmt: skip
    with scopes_disabled():
        approval_decide(approval=approval, membership=cast.alice.membership, decision="grant", reason="ok")
        # Held when the records were made, decided 42 s later.
        Approval.objects.filter(pk=approval.pk).update(created_at=T0, decided_at=T0 + timedelta(seconds=42))
        Project.objects.filter(pk=web.pk).update(name="Web app")
    return {"red": red, "blue": blue, "web": web, "api": api, "alice": alice, "bob": bob}


def report(cast: Cast, token: str, **params: str) -> dict[str, Any]:
    answer = client_for(token).get(
        f"/api/v1/orgs/{cast.alice.org.pk}/usage/", {"since": SINCE, "until": UNTIL, **params}
    )
    assert answer.status_code == 200, answer.content
    body: dict[str, Any] = answer.json()
    return body


def by(groups: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    return {g["name"]: g for g in groups}


def test_per_team_the_figures_add_up_to_the_token_and_the_micro_dollar(cast: Cast, fleet: dict[str, Any]) -> None:
    teams = by(report(cast, cast.alice.token, group_by="team")["groups"])
    assert set(teams) == {"Red", "Blue"}
    red, blue = teams["Red"], teams["Blue"]
    assert (red["requests"], red["refusals"], red["failed"], red["error_rate"]) == (3, 1, 0, 0.0)
    assert (red["input_tokens"], red["output_tokens"], red["cache_read_tokens"], red["cache_write_tokens"]) == (
        300, 70, 1000, 10,
    )  # fmt: skip
    assert Decimal(red["cost_usd"]) == Decimal("0.0137")
    assert (red["latency_ms_p50"], red["latency_ms_p95"]) == (1000.0, 1180.0)
    assert (blue["requests"], blue["failed"], blue["unpriced_calls"], blue["approvals_held"]) == (5, 1, 1, 1)
    assert blue["error_rate"] == 0.2
    assert Decimal(blue["cost_usd"]) == Decimal("0.000035")
    assert (blue["decision_seconds_p50"], blue["decision_seconds_p95"]) == (42.0, 42.0)
    assert [g["name"] for g in report(cast, cast.alice.token, group_by="team")["groups"]] == ["Red", "Blue"]


def test_other_groupings_and_a_series_per_interval(cast: Cast, fleet: dict[str, Any]) -> None:
    models = by(report(cast, cast.alice.token, group_by="model")["groups"])
    assert Decimal(models["claude-opus-5-5"]["cost_usd"]) == Decimal("0.0137")
    assert models[None]["requests"] == 4  # requests that are not LLM calls have no model
    assert set(by(report(cast, cast.alice.token, group_by="agent")["groups"])) == {"claude", "codex"}
    assert set(by(report(cast, cast.alice.token, group_by="project")["groups"])) == {"Web app", "Api"}
    users = by(report(cast, cast.alice.token, group_by="user")["groups"])
    assert users["alice@example.com"]["requests"] == 3 and users["bob@example.com"]["approvals_held"] == 1
    actions = by(report(cast, cast.alice.token, group_by="action")["groups"])
    assert actions["github.issues.create"]["latency_ms_p50"] == 60.0
    hourly = report(cast, cast.alice.token, group_by="connector", interval="hour")
    anthropic = by(hourly["groups"])["anthropic"]
    assert anthropic["requests"] == 4 and len(anthropic["series"]) == 1
    assert anthropic["series"][0]["requests"] == 4 and anthropic["series"][0]["start"] == "2030-01-02T03:00:00+00:00"


def test_a_member_sees_only_their_own_and_bad_questions_are_problems(cast: Cast, fleet: dict[str, Any]) -> None:
    mine = report(cast, cast.bob.token, group_by="user")["groups"]
    assert [g["name"] for g in mine] == ["bob@example.com"]
    url = f"/api/v1/orgs/{cast.alice.org.pk}/usage/"
    for params in ({"group_by": "planet"}, {"interval": "fortnight"}, {"since": UNTIL, "until": SINCE},
                   {"since": "2020-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z", "interval": "hour"}):  # fmt: skip
        answer = client_for(cast.alice.token).get(url, params)
        assert answer.status_code == 400, (params, answer.content)
        assert answer["Content-Type"].startswith("application/problem+json")
    assert client_for(cast.charlie.token).get(url).status_code == 404


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0, 20.0], 95) == pytest.approx(19.5)
