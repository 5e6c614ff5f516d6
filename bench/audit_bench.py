"""Audit ingest with the hash chain (issue 17): records per second into the control plane, with and without the
chain in the same run, and how fast `audit verify` walks a chain.

    .venv/bin/python bench/audit_bench.py [--batches 20] [--batch 500] [--rounds 5] [--json]
                                          [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Each round ingests --batches batches of --batch attempts, then as many outcomes (as the data plane's shipper
sends them: attempts first, outcomes in later batches), through the control plane's ingest service
(audit.services.audit_ingest: parsing, attribution, the INSERTs and UPDATEs, and the chain's links) in one
process. The HTTP layer in front of it is left out: it is the same with or without the chain. "no chain" runs
the same code with the chain's two steps (digests and links) replaced by nothing, alternating with the real
thing round by round, so both see the same machine. Medians over rounds.

On PostgreSQL (--database-url, or DATABASE_URL) a fresh database next to the given one is made and dropped
afterwards; otherwise SQLite in a temporary AILERON_HOME (the embedded default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _database(url: str | None) -> tuple[str, str]:
    """(DATABASE_URL for the bench, the admin URL to make and drop it with), or empty strings for SQLite."""
    if not url:
        return "", ""
    name = f"aileron_audit_bench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}")), url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    bench_url, admin_url = _database(args.database_url)
    home = tempfile.mkdtemp(prefix="aileron-audit-bench-")
    os.environ["AILERON_HOME"] = home
    os.environ.pop("DATABASE_URL", None)
    if bench_url:
        os.environ["DATABASE_URL"] = bench_url
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{urlsplit(bench_url).path[1:]}"')
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aileron_site.settings")
    try:
        figures = _run(args)
    finally:
        if bench_url:
            from django.db import connections

            connections.close_all()
            import psycopg

            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(bench_url).path[1:]}" WITH (FORCE)')
    figures["database"] = "postgresql" if bench_url else "sqlite"
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"audit ingest on {figures['database']}, {args.batches} x {args.batch} attempts then outcomes per round, "
          f"{args.rounds} rounds (medians)")  # fmt: skip
    chained, plain = figures["chain"], figures["no_chain"]
    print(f"  {'':12} {'records/s':>10} {'ms/batch':>9} {'attempts':>9} {'outcomes':>9}")
    for label, f in (("chain", chained), ("no chain", plain)):
        batch_ms = f"{f['ms_per_batch']:>9.1f} {f['ms_per_attempt_batch']:>9.1f} {f['ms_per_outcome_batch']:>9.1f}"
        print(f"  {label:12} {f['records_per_s']:>10,.0f} {batch_ms}")
    print(f"  chain / no chain: {chained['records_per_s'] / plain['records_per_s']:.3f}x records/s")
    v = figures["verify"]
    rate = f"{v['links_per_s']:,.0f} links/s"
    print(f"  verify: {v['links']:,} links in {v['seconds']:.2f} s = {rate}, intact={v['intact']}")


@contextmanager
def _without_chain() -> Any:
    from audit import services

    saved = {name: getattr(services, name) for name in ("links_append", "half_digest")}
    setattr(services, "links_append", lambda entries: None)  # noqa: B010 - patching the module for the bench
    setattr(services, "half_digest", lambda row, kind: "")  # noqa: B010
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(services, name, value)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django_scopes import scopes_disabled

    from audit.chaining import chain_verify
    from audit.services import audit_ingest
    from tenants import services as tenant_services

    with scopes_disabled():  # one organization for the chained rounds (verified at the end), one for the rest
        onboarded = tenant_services.signup(organization_name="Bench", email="bench@example.com")
        session = tenant_services.session_token_create(membership=onboarded.membership, name="bench").token
        other = tenant_services.signup(organization_name="Unchained", email="plain@example.com")
        plain_session = tenant_services.session_token_create(membership=other.membership, name="bench").token
    at = datetime(2030, 1, 1, tzinfo=UTC).isoformat()

    def batches(session: Any) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
        attempts, outcomes = [], []
        for _ in range(args.batches):
            ids = [str(uuid.uuid4()) for _ in range(args.batch)]
            attempts.append([
                {"id": i, "phase": "attempt", "session_id": str(session.pk), "at": at, "kind": "credentialed",
                 "connector": "github", "action": "github.issues.create", "method": "POST", "host": "api.github.com",
                 "path": "/repos/octo/hello/issues", "args": {"owner": "octo", "repo": "hello", "title": "x" * 40},
                 "decision": "allow", "reason": "policy permits", "problem_type": "",
                 "credential_id": str(uuid.UUID(int=7))}
                for i in ids
            ])  # fmt: skip
            outcomes.append([
                {"id": i, "phase": "outcome", "session_id": str(session.pk), "at": at, "upstream_status": 201,
                 "latency_ms": 41.5, "request_bytes": 120, "response_bytes": 2048,
                 "usage": None, "completed_at": at}
                for i in ids
            ])  # fmt: skip
        return attempts, outcomes

    phases: dict[str, list[float]] = {"attempts": [], "outcomes": []}

    def one_round(session: Any) -> float:
        attempts, outcomes = batches(session)
        start = time.perf_counter()
        for phase, group in (("attempts", attempts), ("outcomes", outcomes)):
            began = time.perf_counter()
            for batch in group:
                result = audit_ingest(records=batch)
                if result.rejected:
                    raise SystemExit(f"bench: records were rejected: {result.rejected[:2]}")
            phases[phase].append((time.perf_counter() - began) / len(group))
        return time.perf_counter() - start

    one_round(session)  # warm up (and the connection)
    timings: dict[str, list[float]] = {"chain": [], "no_chain": []}
    split: dict[str, dict[str, list[float]]] = {"chain": {}, "no_chain": {}}
    for _ in range(args.rounds):
        for label in ("chain", "no_chain"):
            phases["attempts"], phases["outcomes"] = [], []
            if label == "chain":
                timings[label].append(one_round(session))
            else:
                with _without_chain():
                    timings[label].append(one_round(plain_session))
            for phase, values in phases.items():
                split[label].setdefault(phase, []).extend(values)
    records = 2 * args.batches * args.batch  # each half counts, as the shipper sends it
    figures: dict[str, Any] = {}
    for label, values in timings.items():
        seconds = statistics.median(values)
        figures[label] = {
            "records_per_s": records / seconds,
            "ms_per_batch": seconds / (2 * args.batches) * 1000,
            "rounds_s": values,
            "ms_per_attempt_batch": statistics.median(split[label]["attempts"]) * 1000,
            "ms_per_outcome_batch": statistics.median(split[label]["outcomes"]) * 1000,
        }
    start = time.perf_counter()
    verified = chain_verify(organization_uuid=onboarded.organization.pk)
    seconds = time.perf_counter() - start
    figures["verify"] = {
        "links": verified.checked,
        "seconds": seconds,
        "links_per_s": verified.checked / seconds,
        "intact": verified.intact,
    }
    return figures


if __name__ == "__main__":
    main()
