"""Approval latency (issue #6): held request -> approver's websocket, grant -> upstream, other traffic while held.

    .venv/bin/python bench/approval_bench.py [--samples 100] [--unrelated 300] [--held 50] [--json]
                                             [--topologies embedded,redis] [--settle 0.1]

Each topology is a real `aileron service` (API under daphne, Celery worker and beat, the data plane) in front of
the tests' fake HTTPS upstream (tests/proxy_world.py: Alice with a personal token, a team with the connectors
enabled, their credentials, a live session and its CA). `stripe.create-refund` is held by an approval rule
(window 120 s); Alice, an owner, watches the approvals websocket and decides over REST with her personal token.

    embedded    the default: SQLite, the in-memory channel layer, the filesystem Celery broker
    redis       PostgreSQL (a fresh database next to DATABASE_URL's, dropped afterwards) and Redis (REDIS_URL's
                server, database --redis-db, emptied before and after) for the channel layer and the broker;
                skipped, saying so, unless DATABASE_URL and REDIS_URL (or --database-url, --redis-url) are set

Figures, all from the bench's own clock (time.perf_counter, one process):

    held -> event      the agent sends a refund with a new charge id through the proxy (keep-alive CONNECT tunnel,
                       session CA verified) until the approver's websocket receives its `created` event
    grant -> upstream  the approver's grant POST is sent until the fake upstream has read the released request
                       (a responder of this file stamps each arrival); the request has been held for --settle
                       seconds first, so the data plane is in its wait, as it is when a person decides
    unrelated          sequential GET /v1/customers (stripe.list-customers: credentialed, audited) through the
                       proxy: with nothing held, then while --held refunds from as many agent clients are held,
                       then again after they were all rejected

The indented rows say where the time goes: the server's own timestamps (the approval's created_at and
decided_at, wall clock on the same machine) against the bench's; when the `decided` and `used` events reach the
websocket (`used` is pushed once the data plane has claimed the grant for its request, just before it forwards);
when the grant POST itself is answered; and the API's floor, the same authenticated POST for a missing approval.
Then the CPU the API (daphne) and the data plane spend per held-and-granted refund (from /proc, the --settle
pause included) and, on PostgreSQL, how many connections were opened per refund (pg_stat_database.sessions).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socketserver
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from dataplane.credentials import DEFAULT_BUNDLE_TTL_SECONDS  # noqa: E402
from tests.fake_upstream import Received, Reply  # noqa: E402
from tests.proxy_world import World, proxy_world  # noqa: E402

ACTION = "stripe.create-refund"
WINDOW_SECONDS = 120
TARGET_P99_MS = 100.0
REFUNDS = "https://api.stripe.com/v1/refunds"
UNRELATED = "https://api.stripe.com/v1/customers"


# The tests' fake upstream (http.server) writes a response's headers and its body in two sends; with Nagle's
# algorithm on, the body then waits for the proxy's delayed ACK: +40 ms on every response, which would hide what
# the bench is after. Set here, for this process's servers only (tests/fake_upstream.py is left as it is).
socketserver.StreamRequestHandler.disable_nagle_algorithm = True


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: int) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    return data[min(len(data) - 1, int(round(q / 100 * (len(data) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def service_pids(leader: int) -> dict[str, int]:
    """The API (daphne) and the data plane among `aileron service`'s children (its process group)."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != os.getpgid(leader):
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for role, module in (("api", b"daphne"), ("dataplane", b"dataplane.server")):
            if len(argv) > 2 and argv[1] == b"-m" and argv[2] == module:
                found[role] = int(entry)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- what the bench observes ----------------------------------------------------------------------------------


class Arrivals:
    """perf_counter() stamps keyed by charge id, waited on from other threads."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._changed = threading.Condition()

    def stamp(self, key: str, at: float) -> None:
        with self._changed:
            self._seen.setdefault(key, at)
            self._changed.notify_all()

    def wait(self, key: str, timeout: float = 30.0) -> float:
        with self._changed:
            if not self._changed.wait_for(lambda: key in self._seen, timeout):
                raise SystemExit(f"bench: {key} never arrived within {timeout:.0f} s")
            return self._seen[key]

    def count(self, keys: list[str]) -> int:
        with self._changed:
            return sum(1 for k in keys if k in self._seen)


def upstream_stamper(arrivals: Arrivals) -> Callable[[Received], Reply | None]:
    """A fake-upstream responder that stamps each refund as it arrives and leaves the answer to the others."""

    def responder(received: Received) -> Reply | None:
        at = time.perf_counter()
        if received.method == "POST" and received.path.startswith("/v1/refunds"):
            charge = parse_qs(received.body.decode(errors="replace")).get("charge", [""])[0]
            arrivals.stamp(charge, at)
        return None

    return responder


@dataclass
class Approver:
    """The approver's websocket, read in a thread: per event kind, when each charge's event arrived."""

    url: str
    token: str
    events: dict[str, Arrivals] = field(default_factory=dict)
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)  # by charge, the latest payload
    _snapshot: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arrivals(self, kind: str) -> Arrivals:
        with self._lock:
            return self.events.setdefault(kind, Arrivals())

    def run(self, stop: threading.Event) -> None:
        with connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"}) as socket:
            while not stop.is_set():
                try:
                    message = socket.recv(timeout=0.5)
                except TimeoutError:
                    continue
                at = time.perf_counter()
                event = json.loads(message)
                if event.get("event") == "snapshot":
                    self._snapshot.set()
                    continue
                approval = event.get("approval") or {}
                charge = str((approval.get("args") or {}).get("charge", ""))
                with self._lock:
                    self.approvals[charge] = approval
                self.arrivals(str(event.get("event"))).stamp(charge, at)

    @contextmanager
    def listening(self) -> Iterator[Approver]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), daemon=True)
        thread.start()
        try:
            if not self._snapshot.wait(30):
                raise SystemExit(f"bench: the approvals websocket ({self.url}) sent no snapshot")
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)


@dataclass
class Agent:
    """One refund sent through the proxy from a thread; when it left and what came back."""

    client: httpx.Client
    charge: str
    sent: float = 0.0  # perf_counter
    sent_wall: float = 0.0
    done: float = 0.0
    status: int = 0
    error: str = ""
    thread: threading.Thread | None = None

    def start(self) -> Agent:
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()
        return self

    def _send(self) -> None:
        self.sent_wall = time.time()
        self.sent = time.perf_counter()
        try:
            reply = self.client.post(REFUNDS, data={"charge": self.charge, "amount": "100"})
            self.status = reply.status_code
        except httpx.HTTPError as exc:
            self.error = repr(exc)
        self.done = time.perf_counter()

    def join(self, timeout: float = 60.0) -> None:
        assert self.thread is not None  # noqa: S101
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise SystemExit(f"bench: the agent's refund {self.charge} got no answer within {timeout:.0f} s")


# --- the topologies -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    url: str
    name: str
    admin_url: str

    def sessions(self) -> int:
        """Connections ever opened to the database (PostgreSQL counts them as they are made)."""
        import psycopg

        time.sleep(1.1)  # backends report their statistics at most once a second
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.name,)).fetchone()
        return int(row[0]) if row else 0


@contextmanager
def fresh_database(base_url: str) -> Iterator[Database]:
    """A database of the bench's own on DATABASE_URL's server, dropped afterwards."""
    import psycopg

    name = f"aileron_bench_{secrets.token_hex(4)}"
    parts = urlsplit(base_url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Database(urlunsplit(parts._replace(path=f"/{name}")), name, admin_url)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def spare_redis(base_url: str, db: int) -> Iterator[str]:
    """REDIS_URL's server, database `db`, emptied before and after."""
    import redis

    url = urlunsplit(urlsplit(base_url)._replace(path=f"/{db}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@dataclass
class Bench:
    world: World
    approver: Approver
    released: Arrivals  # charge -> when the fake upstream read it
    database: Database | None = None

    def api(self) -> httpx.Client:
        return self.world.api()

    def agent_client(self) -> httpx.Client:
        return httpx.Client(proxy=self.world.proxy_url, verify=self.world.tls(), timeout=WINDOW_SECONDS + 60)


@contextmanager
def topology(folder: Path, env: dict[str, str], database: Database | None) -> Iterator[Bench]:
    # The data plane's shipped session cache, not the tests' 1 s (a control-plane check every second).
    env = {"AILERON_SESSION_CACHE_SECONDS": str(DEFAULT_BUNDLE_TTL_SECONDS), **env}
    with proxy_world(folder, extra_env=env) as world:
        released = Arrivals()
        world.upstream.responders.insert(0, upstream_stamper(released))
        with world.api() as api:
            rule = api.post(
                f"/api/v1/orgs/{world.org_id}/approval-rules/",
                json={"action": ACTION, "window_seconds": WINDOW_SECONDS},
            )
            if rule.status_code != 201:
                raise SystemExit(f"bench: cannot create the approval rule: {rule.status_code} {rule.text[:300]}")
        url = world.service.url.replace("http://", "ws://") + f"/ws/orgs/{world.org_id}/approvals/"
        with Approver(url, world.pat).listening() as approver:
            yield Bench(world, approver, released, database)


# --- the measurements -----------------------------------------------------------------------------------------


@dataclass
class Hops:
    held_to_event_ms: list[float] = field(default_factory=list)
    send_to_row_ms: list[float] = field(default_factory=list)  # created_at - sent (server clock)
    row_to_event_ms: list[float] = field(default_factory=list)
    grant_to_upstream_ms: list[float] = field(default_factory=list)
    grant_to_decided_row_ms: list[float] = field(default_factory=list)  # decided_at - grant sent (server clock)
    grant_to_decided_event_ms: list[float] = field(default_factory=list)
    grant_to_used_event_ms: list[float] = field(default_factory=list)  # the data plane has used the grant
    grant_reply_ms: list[float] = field(default_factory=list)  # the grant POST's own round trip
    api_floor_ms: list[float] = field(default_factory=list)  # an authenticated POST answered 404
    pg_sessions_per_refund: float | None = None
    cpu_ms_per_refund: dict[str, float] = field(default_factory=dict)  # per process, settle included
    failures: list[str] = field(default_factory=list)


def measure_hops(bench: Bench, *, label: str, samples: int, warmup: int, settle: float) -> Hops:
    """Sequential held refunds, each granted after `settle` s; the warm-ups are left out of the figures."""
    hops = Hops()
    created, decided, used = (bench.approver.arrivals(kind) for kind in ("created", "decided", "used"))
    org = bench.world.org_id
    with bench.agent_client() as client, bench.api() as api:
        for _ in range(30):  # the API's own floor: the same authenticated POST, for an approval that is not there
            t0 = time.perf_counter()
            api.post(f"/api/v1/orgs/{org}/approvals/{uuid.uuid4()}/grant/", json={})
            hops.api_floor_ms.append((time.perf_counter() - t0) * 1000)
        sessions_before = 0
        pids = service_pids(bench.world.service.process.pid)
        cpu_before: dict[str, float] = {}
        for i in range(warmup + samples):
            if i == warmup:
                if bench.database is not None:
                    sessions_before = bench.database.sessions()
                cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
            agent = Agent(client, f"ch_{label}_{i}_{secrets.token_hex(3)}").start()
            at_event = created.wait(agent.charge)
            approval = bench.approver.approvals[agent.charge]
            time.sleep(settle)
            grant_wall = time.time()
            grant_sent = time.perf_counter()
            granted = api.post(f"/api/v1/orgs/{org}/approvals/{approval['id']}/grant/", json={})
            grant_reply = time.perf_counter()
            if granted.status_code != 200:
                raise SystemExit(f"bench: the grant failed: {granted.status_code} {granted.text[:300]}")
            at_upstream = bench.released.wait(agent.charge)
            at_decided = decided.wait(agent.charge)
            at_used = used.wait(agent.charge)
            agent.join()
            if agent.status != 201:
                hops.failures.append(f"{agent.charge}: {agent.status} {agent.error}")
            if i < warmup:
                continue
            held_ms = (at_event - agent.sent) * 1000
            to_row_ms = (wall(approval["created_at"]) - agent.sent_wall) * 1000
            hops.held_to_event_ms.append(held_ms)
            hops.send_to_row_ms.append(to_row_ms)
            hops.row_to_event_ms.append(held_ms - to_row_ms)
            hops.grant_to_upstream_ms.append((at_upstream - grant_sent) * 1000)
            decided_at = bench.approver.approvals[agent.charge].get("decided_at")
            if decided_at:
                hops.grant_to_decided_row_ms.append((wall(decided_at) - grant_wall) * 1000)
            hops.grant_to_decided_event_ms.append((at_decided - grant_sent) * 1000)
            hops.grant_to_used_event_ms.append((at_used - grant_sent) * 1000)
            hops.grant_reply_ms.append((grant_reply - grant_sent) * 1000)
        if samples:
            hops.cpu_ms_per_refund = {
                role: (cpu_seconds(pid) - cpu_before[role]) / samples * 1000 for role, pid in pids.items()
            }
        if bench.database is not None and samples:
            hops.pg_sessions_per_refund = (bench.database.sessions() - sessions_before) / samples
    return hops


def unrelated_run(client: httpx.Client, requests: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(requests):
        t0 = time.perf_counter()
        reply = client.get(UNRELATED, params={"limit": "1"})
        latencies.append((time.perf_counter() - t0) * 1000)
        if reply.status_code != 200:
            raise SystemExit(f"bench: unrelated traffic answered {reply.status_code}: {reply.text[:300]}")
    return latencies


@dataclass
class Unrelated:
    idle_ms: list[float]
    held_ms: list[float]
    after_ms: list[float]
    held: int  # how many refunds were held during the second run (still unanswered at its end)
    rejected_403: int


def measure_unrelated(bench: Bench, *, label: str, requests: int, held: int) -> Unrelated:
    """The same sequential GETs with nothing held, with `held` refunds held, and after they were rejected."""
    org = bench.world.org_id
    created = bench.approver.arrivals("created")
    with bench.agent_client() as client:
        unrelated_run(client, 30)  # warm-up: tunnel, session, credential cache
        idle = unrelated_run(client, requests)
        agents = [Agent(bench.agent_client(), f"ch_{label}_held_{n}_{secrets.token_hex(3)}") for n in range(held)]
        try:
            for agent in agents:
                agent.start()
            for agent in agents:
                created.wait(agent.charge, timeout=120)
            time.sleep(1.0)  # each held request's claim answer reaches the data plane, which starts its wait
            during = unrelated_run(client, requests)
            still_held = sum(1 for a in agents if not a.done)
            with bench.api() as api:
                for agent in agents:
                    approval_id = bench.approver.approvals[agent.charge]["id"]
                    reply = api.post(f"/api/v1/orgs/{org}/approvals/{approval_id}/reject/", json={"reason": "bench"})
                    if reply.status_code != 200:
                        raise SystemExit(f"bench: the reject failed: {reply.status_code} {reply.text[:300]}")
            for agent in agents:
                agent.join()
        finally:
            for agent in agents:
                agent.client.close()
        after = unrelated_run(client, requests)
    return Unrelated(idle, during, after, still_held, sum(1 for a in agents if a.status == 403))


# --- the run --------------------------------------------------------------------------------------------------


def figures(values: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(values, 50), "p99_ms": pct(values, 99), "n": float(len(values))}


def summarize(hops: Hops, unrelated: Unrelated) -> dict[str, Any]:
    idle, during = figures(unrelated.idle_ms), figures(unrelated.held_ms)
    return {
        "held_to_event": figures(hops.held_to_event_ms),
        "grant_to_upstream": figures(hops.grant_to_upstream_ms),
        "breakdown": {
            "send_to_row": figures(hops.send_to_row_ms),
            "row_to_event": figures(hops.row_to_event_ms),
            "grant_to_decided_row": figures(hops.grant_to_decided_row_ms),
            "grant_to_decided_event": figures(hops.grant_to_decided_event_ms),
            "grant_to_used_event": figures(hops.grant_to_used_event_ms),
            "grant_reply": figures(hops.grant_reply_ms),
            "api_floor": figures(hops.api_floor_ms),
            "pg_sessions_per_refund": hops.pg_sessions_per_refund,
            "cpu_ms_per_refund": hops.cpu_ms_per_refund,
        },
        "unrelated": {
            "idle": idle,
            "held": during,
            "after": figures(unrelated.after_ms),
            "held_requests": unrelated.held,
            "rejected_403": unrelated.rejected_403,
            "p50_ratio": during["p50_ms"] / idle["p50_ms"],
            "p99_ratio": during["p99_ms"] / idle["p99_ms"],
        },
        "failures": hops.failures,
    }


HOP_ROWS = {
    "held_to_event": (
        "held -> event at the approver's websocket",
        (
            ("send_to_row", "agent sent -> approval row (created_at)"),
            ("row_to_event", "approval row -> created event"),
        ),
    ),
    "grant_to_upstream": (
        "grant POST sent -> request at the upstream",
        (
            ("grant_to_decided_row", "grant sent -> decided_at (server clock)"),
            ("grant_to_decided_event", "grant sent -> decided event at websocket"),
            ("grant_to_used_event", "grant sent -> used event (grant re-claimed)"),
            ("grant_reply", "grant POST answered (round trip)"),
            ("api_floor", "API floor: the same POST, 404"),
        ),
    ),
}


def table(name: str, s: dict[str, Any], *, samples: int, settle: float, requests: int, held: int) -> str:
    lines = [f"{name}:", f"  {'hop':<46}{'p50 ms':>9}{'p99 ms':>9}   target: p99 < {TARGET_P99_MS:.0f} ms"]
    b = s["breakdown"]
    for key, (label, parts) in HOP_ROWS.items():
        f = s[key]
        verdict = "met" if f["p99_ms"] < TARGET_P99_MS else "NOT met"
        lines.append(f"  {label:<46}{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}   {verdict}")
        for part, part_label in parts:
            f = b[part]
            lines.append(f"    {part_label:<44}{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}")
    lines.append(f"  ({samples} held refunds in turn, each granted {settle * 1000:.0f} ms after its created event)")
    per_refund = [f"{role} {ms:.1f} ms CPU" for role, ms in b["cpu_ms_per_refund"].items()]
    if b["pg_sessions_per_refund"] is not None:
        per_refund.append(f"{b['pg_sessions_per_refund']:.1f} PostgreSQL connections opened")
    if per_refund:
        lines.append(f"  per held-and-granted refund: {', '.join(per_refund)}")
    u = s["unrelated"]
    lines.append(f"  {'unrelated GET /v1/customers, sequential':<46}{'p50 ms':>9}{'p99 ms':>9}")
    for key, label in (("idle", "nothing held"), ("held", f"{held} refunds held"), ("after", "after rejecting them")):
        f = u[key]
        lines.append(f"    {label:<44}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}")
    lines.append(
        f"    {'held / nothing held':<44}{u['p50_ratio']:>8.2f}x{u['p99_ratio']:>8.2f}x   ({requests} GETs a run; "
        f"{u['held_requests']} of {held} still held at its end, {u['rejected_403']} answered 403 once rejected)"
    )
    for failure in s["failures"]:
        lines.append(f"  FAILED: {failure}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--samples", type=int, default=100, help="Held-and-granted refunds per topology [100].")
    p.add_argument("--warmup", type=int, default=5, help="Held-and-granted refunds left out of the figures [5].")
    p.add_argument("--settle", type=float, default=0.1, help="Seconds from the event to the grant [0.1].")
    p.add_argument("--unrelated", type=int, default=300, help="Sequential unrelated GETs per run [300].")
    p.add_argument("--held", type=int, default=50, help="Refunds held during the second unrelated run [50].")
    p.add_argument("--topologies", default="embedded,redis", help="Comma-separated subset, in order.")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL [$DATABASE_URL].")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="Redis server [$REDIS_URL].")
    p.add_argument("--redis-db", type=int, default=9, help="The Redis database the bench empties and uses [9].")
    p.add_argument("--json", action="store_true", help="Print the figures as JSON on stdout (progress on stderr).")
    args = p.parse_args(argv)
    # tests/service.py makes a database of its own whenever these are set: the bench passes its own instead.
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    started = time.monotonic()

    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in [t.strip() for t in args.topologies.split(",") if t.strip()]:
        if name not in ("embedded", "redis"):
            raise SystemExit(f"bench: unknown topology {name!r} (embedded, redis)")
        if name == "redis" and not (args.database_url and args.redis_url):
            skipped[name] = "needs DATABASE_URL and REDIS_URL (or --database-url and --redis-url)"
            log(f"{name}: skipped: {skipped[name]}")
            continue
        with ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"aileron-approval-bench-{name}-")))
            env: dict[str, str] = {}
            database: Database | None = None
            if name == "redis":
                database = stack.enter_context(fresh_database(args.database_url))
                env["DATABASE_URL"] = database.url
                env["REDIS_URL"] = stack.enter_context(spare_redis(args.redis_url, args.redis_db))
            log(f"{name}: starting aileron service and its world ...")
            t0 = time.monotonic()
            bench = stack.enter_context(topology(folder, env, database))
            log(f"{name}: ready in {time.monotonic() - t0:.0f} s; {args.samples} held-and-granted refunds ...")
            hops = measure_hops(bench, label=name, samples=args.samples, warmup=args.warmup, settle=args.settle)
            log(
                f"{name}: held -> event p50 {pct(hops.held_to_event_ms, 50):.1f} ms p99 "
                f"{pct(hops.held_to_event_ms, 99):.1f} ms; grant -> upstream p50 "
                f"{pct(hops.grant_to_upstream_ms, 50):.1f} ms p99 {pct(hops.grant_to_upstream_ms, 99):.1f} ms"
            )
            log(f"{name}: unrelated traffic, then with {args.held} held ...")
            unrelated = measure_unrelated(bench, label=name, requests=args.unrelated, held=args.held)
            results[name] = summarize(hops, unrelated)
            log(f"{name}: done; stopping the service")
    elapsed = time.monotonic() - started

    meta = {
        "cores": os.cpu_count(),
        "samples": args.samples,
        "warmup": args.warmup,
        "settle_s": args.settle,
        "unrelated_requests": args.unrelated,
        "held": args.held,
        "target_p99_ms": TARGET_P99_MS,
        "elapsed_s": round(elapsed, 1),
    }
    if args.json:
        print(json.dumps({"meta": meta, "figures": results, "skipped": skipped}, indent=1))
        return 0
    print(
        f"Approval bench ({elapsed:.0f} s, {os.cpu_count()} cores shared by everything, nothing pinned): a real "
        "`aileron service` and its proxy in front of a fake HTTPS upstream; the agent is httpx through the proxy "
        "(one keep-alive tunnel, session CA verified), the approver a websocket plus REST with a personal token."
    )
    for name, summary in results.items():
        print()
        print(table(name, summary, samples=args.samples, settle=args.settle, requests=args.unrelated, held=args.held))
    for name, why in skipped.items():
        print(f"\n{name}: skipped ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
