"""Policy engine figures: median µs per Engine.decide() beside bare cedarpy.is_authorized on the same set.

    .venv/bin/python bench/policy_bench.py [--policies 20] [--runs 5000]

Both sides use the same pre-parsed PolicySet, request and entities; the difference is the engine's own work
(argument sanitization, building the request, reading the diagnostics).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import cedarpy

from policies.engine import Engine, PolicyDoc

TEAMS = [str(uuid.uuid4()) for _ in range(3)]


def policies(count: int) -> list[PolicyDoc]:
    docs = []
    for i in range(count):
        team = TEAMS[i % len(TEAMS)]
        if i % 3 == 0:
            cedar = f"""@outcome("approval_required")
forbid(principal in Aileron::Team::"{team}", action == Aileron::Action::"stripe.create-refund", resource)
when {{ context.args has amount && context.args.amount > {1000 + i} }};"""
        elif i % 3 == 1:
            cedar = f'forbid(principal, action == Aileron::Action::"github.delete-repo-{i}", resource);'
        else:
            cedar = f"""@waive("approval")
permit(principal in Aileron::Team::"{team}", action == Aileron::Action::"slack.post-message", resource)
when {{ context.args has channel && context.args.channel like "#bots-*" }};"""
        docs.append(PolicyDoc(id=str(uuid.uuid4()), name=f"policy {i}", cedar=cedar))
    return docs


def median_us(fn: Callable[[], object], runs: int) -> float:
    for _ in range(min(200, runs)):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5000)
    options = parser.parse_args()

    docs = policies(options.policies)
    start = time.perf_counter()
    engine = Engine(docs)
    parse_ms = (time.perf_counter() - start) * 1000
    kwargs = {
        "user_id": str(uuid.uuid4()),
        "team_ids": TEAMS[:2],
        "session_id": str(uuid.uuid4()),
        "agent": "claude-code",
        "project_id": None,
        "connector": "stripe",
        "action": "stripe.create-refund",
        "args": {"charge": "ch_123", "amount": 2500, "reason": "requested_by_customer", "metadata": {"t": "1"}},
    }
    request, entities = engine.request(**kwargs)  # type: ignore[arg-type]
    policy_set = engine.policy_set

    decide = median_us(lambda: engine.decide(**kwargs, default_approval=True), options.runs)  # type: ignore[arg-type]
    bare = median_us(lambda: cedarpy.is_authorized(request, policy_set, entities), options.runs)
    print(f"policies: {options.policies} documents, parsed once in {parse_ms:.1f} ms")
    print(f"Engine.decide():            {decide:7.1f} µs median over {options.runs} runs")
    print(f"cedarpy.is_authorized bare: {bare:7.1f} µs median (same pre-parsed PolicySet)")
    print(f"engine overhead:            {decide - bare:7.1f} µs")
    decision = engine.decide(**kwargs, default_approval=True)  # type: ignore[arg-type]
    print(f"decision: {decision.outcome}, {decision.reason}")


if __name__ == "__main__":
    main()
