"""Data plane throughput and latency beside bare mitmdump and a direct connection, same HTTPS upstream, one run.

    .venv/bin/python bench/proxy_bench.py [--requests 1000] [--rounds 3] [--json] [--no-pin] [--profile FILE]
        [--baseline OTHER_CHECKOUT [--pairs N] [--pair-requests 400]]

Configurations, all against one local nginx HTTPS upstream (self-signed, a throwaway CA):

    direct      the client straight to nginx
    mitmdump    bare `mitmdump` (lazy connection strategy, upstream CA trusted) through CONNECT
    dataplane   `aileron service`'s data plane on api.github.com -> nginx: session check, GitHub action
                identified (github.get-repo), Cedar decision, durable (fdatasync'd) attempt record, credential
                injected, response streamed through the redactor, outcome record; audit shipped to the API
    egress      the same data plane on an uncredentialed host (docs.example.com -> nginx): mediation alone

Loads: sequential (1 worker) and concurrent (8 and 32 workers); each worker holds one keep-alive connection
(through the proxy: one CONNECT tunnel) and verifies TLS against the CA it was given (the session CA for the
data plane, mitmdump's CA for mitmdump). The load client is Python (http.client, one thread per worker) and is
the same for every configuration, so the ratios are fair; `hey` is not used because it never verifies TLS.
Each configuration is warmed up, then the rounds interleave the configurations; the figures are medians over
rounds. By default each proxy is pinned to core 1 and everything else (client, nginx, API, worker) to core 0.
On a shared machine the rounds of one configuration can run several percent apart; with --pairs, each change is
also run back to back with its baseline many times (ABBA order) and the medians of those paired ratios are
printed, which cancels drift that a ratio of medians keeps.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.fake_upstream import _certificates  # noqa: E402
from tests.proxy_world import cli, session_ca  # noqa: E402
from tests.service import BIN, free_port, running_service  # noqa: E402

CONNECTOR_HOST = "api.github.com"
EGRESS_HOST = "docs.example.com"
PATH = "/repos/acme/app"
BODY = json.dumps({"id": 1, "full_name": "acme/app", "private": False, "default_branch": "main"})
LOADS = (("sequential", 1), ("c8", 8), ("c32", 32))


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- the upstream ---------------------------------------------------------------------------------------------


@contextmanager
def nginx_upstream(folder: Path, cpu: str | None) -> Iterator[tuple[int, Path]]:
    """nginx serving BODY over HTTPS on a loopback port; yields (port, CA file)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("bench: nginx is missing (apt-get install -y nginx-light)")
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = _certificates(folder, (CONNECTOR_HOST, EGRESS_HOST))
    port = free_port()
    body = BODY.replace("'", "\\'")
    conf = folder / "nginx.conf"
    conf.write_text(f"""daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
worker_processes 1;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {folder / "body"};
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    ssl_session_cache shared:bench:1m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert_file};
        ssl_certificate_key {key_file};
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
""")
    command = [nginx, "-c", str(conf), "-p", str(folder), "-e", str(folder / "error.log")]
    process = subprocess.Popen(_pinned(command, cpu), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    try:
        _wait_port(port, process, "nginx")
        yield port, ca_file
    finally:
        _stop(process)


# --- the proxies ----------------------------------------------------------------------------------------------


@contextmanager
def bare_mitmdump(folder: Path, upstream_ca: Path, cpu: str | None) -> Iterator[tuple[int, Path, int]]:
    """`mitmdump` from the venv with a throwaway confdir; yields (port, its CA certificate, its pid)."""
    port = free_port()
    confdir = folder / "mitmdump"
    confdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(BIN / "mitmdump"),
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--set",
        f"confdir={confdir}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={upstream_ca}",
        "--set",
        "connection_strategy=lazy",
        "-q",
    ]
    out = (folder / "mitmdump.log").open("wb")
    process = subprocess.Popen(  # noqa: S603
        _pinned(command, cpu), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_port(port, process, "mitmdump")
        yield port, confdir / "mitmproxy-ca-cert.pem", process.pid
    finally:
        _stop(process)
        out.close()


@dataclass
class Aileron:
    proxy_port: int
    token: str
    session_id: str
    ca_file: Path
    api_url: str
    org_id: str
    pat: str
    dataplane_pid: int
    service_pids: list[int] = field(default_factory=list)

    def audit_count(self, **params: str) -> int:
        with httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {self.pat}"}, timeout=30) as api:
            response = api.get(
                f"/api/v1/orgs/{self.org_id}/audit/", params={"session": self.session_id, "limit": "1", **params}
            )
        response.raise_for_status()
        return int(response.json()["count"])


@contextmanager
def aileron(folder: Path, upstream_port: int, upstream_ca: Path, *, code: Path | None = None) -> Iterator[Aileron]:
    """`aileron service` with one user, team, the GitHub connector enabled, a GitHub secret and a live session.

    `code`: run another checkout's code (a baseline) with this venv's packages, through PYTHONPATH."""
    env = {
        "AILERON_UPSTREAM_RESOLVE": ",".join(
            f"{h}:443=127.0.0.1:{upstream_port}" for h in (CONNECTOR_HOST, EGRESS_HOST)
        ),
        "AILERON_UPSTREAM_CA": str(upstream_ca),
    }
    if code is not None:
        env["PYTHONPATH"] = str(code.resolve())
    folder.mkdir(parents=True, exist_ok=True)
    # `python -m` children import from their working folder first: a baseline's service starts in its checkout.
    with running_service(folder, extra_env=env, cwd=code.resolve() if code is not None else None) as service:
        cli(service.env, "init", "--org", "Acme", "--email", "bench@example.com", "--server", service.url)
        login = json.loads((service.home / "cli.json").read_text())
        pat, org_id = login["token"], login["organization_id"]
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {pat}"}, timeout=30) as api:
            me = api.get("/api/v1/whoami/").json()
            user_id = me["id"] if "id" in me else me["user"]["id"]
            team = api.post(f"/api/v1/orgs/{org_id}/teams/", json={"name": "Bench", "slug": "bench"}).json()
            api.post(f"/api/v1/orgs/{org_id}/teams/{team['id']}/members/", json={"user_id": user_id})
            enabled = api.put(f"/api/v1/orgs/{org_id}/connectors/github/teams/{team['id']}/")
            enabled.raise_for_status()
        cli(service.env, "secret", "add", "github-key", "--connector", "github", stdin=b"ghp_bench_not_a_real_token\n")
        started = json.loads(cli(service.env, "session", "start", "--json").stdout)
        ca_file = folder / "session-ca.pem"
        ca_file.write_bytes(session_ca(service.proxy_port, started["token"]))
        group = os.getpgid(service.process.pid)
        pids = [pid for pid in _pids() if _pgid(pid) == group]
        dataplane = [pid for pid in pids if "dataplane.server" in _cmdline(pid)]
        if len(dataplane) != 1:
            raise SystemExit(f"bench: cannot find the data plane process among {pids}")
        yield Aileron(
            proxy_port=service.proxy_port,
            token=started["token"],
            session_id=started["session_id"],
            ca_file=ca_file,
            api_url=service.url,
            org_id=org_id,
            pat=pat,
            dataplane_pid=dataplane[0],
            service_pids=[p for p in pids if p != dataplane[0]],
        )


# --- the load client ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    connect: tuple[str, int]  # where the TCP connection goes (the proxy, or the upstream when direct)
    tunnel: tuple[str, int] | None  # CONNECT target, when through a proxy
    proxy_auth: str | None
    cafile: Path
    pid: int | None = None  # the proxy process, whose CPU time per request is measured
    others: tuple[int, ...] = ()  # the rest of its `aileron service` (API ingesting the audit, worker, beat)

    def connection(self, context: ssl.SSLContext, timeout: float = 10.0) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(*self.connect, context=context, timeout=timeout)
        if self.tunnel is not None:
            headers = {}
            if self.proxy_auth:
                headers["Proxy-Authorization"] = "Basic " + base64.b64encode(self.proxy_auth.encode()).decode()
            conn.set_tunnel(*self.tunnel, headers=headers)
        return conn


@dataclass
class Result:
    seconds: float
    latencies_ms: list[float]
    errors: int
    statuses: dict[int, int]
    stalled: bool = False  # a request timed out: the run was cut short
    proxy_cpu_seconds: float | None = None  # user + system time of the proxy process (all threads) in the run
    proxy_sys_seconds: float | None = None  # of which system (kernel) time
    proxy_faults: int | None = None  # minor page faults of the proxy process in the run
    others_cpu_seconds: float | None = None  # user + system time of the rest of the service in the run

    @property
    def cpu_us_per_request(self) -> float:
        if self.proxy_cpu_seconds is None or not self.latencies_ms:
            return float("nan")
        return self.proxy_cpu_seconds / len(self.latencies_ms) * 1e6

    @property
    def others_us_per_request(self) -> float:
        if self.others_cpu_seconds is None or not self.latencies_ms:
            return float("nan")
        return self.others_cpu_seconds / len(self.latencies_ms) * 1e6

    @property
    def sys_us_per_request(self) -> float:
        if self.proxy_sys_seconds is None or not self.latencies_ms:
            return float("nan")
        return self.proxy_sys_seconds / len(self.latencies_ms) * 1e6

    @property
    def faults_per_request(self) -> float:
        if self.proxy_faults is None or not self.latencies_ms:
            return float("nan")
        return self.proxy_faults / len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, q: int) -> float:
        data = sorted(self.latencies_ms)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(round(q / 100 * (len(data) - 1))))]


def run_load(target: Target, workers: int, requests: int, warmup_per_worker: int = 3) -> Result:
    """`requests` GETs over `workers` keep-alive connections; each worker warms its connection up first.

    A request that times out (10 s) stops the whole run: a stalled proxy is reported, not waited out.
    """
    context = ssl.create_default_context(cafile=str(target.cafile))
    stalled = threading.Event()
    counter = iter(range(requests))
    lock = threading.Lock()
    ready = threading.Barrier(workers + 1)
    start_gate = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(workers)]
    errors = [0] * workers
    statuses: collections.Counter[int] = collections.Counter()
    headers = {"Accept": "application/json", "User-Agent": "aileron-proxy-bench"}

    def one(conn: http.client.HTTPSConnection) -> int:
        conn.request("GET", PATH, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    def worker(index: int) -> None:
        conn = target.connection(context)
        try:
            for _ in range(warmup_per_worker):
                one(conn)
        except Exception as exc:  # noqa: BLE001 - reported, and the run counts it
            log(f"{target.name}: warm-up failed: {exc!r}")
            errors[index] += 1
            stalled.set()
            conn.close()
        ready.wait()
        start_gate.wait()
        mine = latencies[index]
        local: collections.Counter[int] = collections.Counter()
        while not stalled.is_set():
            with lock:
                if next(counter, None) is None:
                    break
            t0 = time.perf_counter()
            try:
                status = one(conn)
            except Exception as exc:  # noqa: BLE001
                errors[index] += 1
                if isinstance(exc, TimeoutError):
                    stalled.set()
                if errors[index] <= 3:
                    log(f"{target.name}: request failed: {exc!r}")
                conn.close()
                continue
            mine.append((time.perf_counter() - t0) * 1000)
            local[status] += 1
            if status != 200:
                errors[index] += 1
        conn.close()
        with lock:
            statuses.update(local)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    ready.wait()
    cpu0 = _cpu_seconds(target.pid)
    others0 = _others_cpu(target.others)
    counters0 = _counters(target.pid)
    t0 = time.perf_counter()
    start_gate.set()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    cpu1 = _cpu_seconds(target.pid)
    others1 = _others_cpu(target.others)
    counters1 = _counters(target.pid)
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    sys_s, faults = (
        (counters1[0] - counters0[0], counters1[1] - counters0[1]) if counters0 and counters1 else (None, None)
    )
    others = others1 - others0 if others0 is not None and others1 is not None else None
    return Result(
        seconds,
        [x for xs in latencies for x in xs],
        sum(errors),
        dict(statuses),
        stalled.is_set(),
        cpu,
        sys_s,
        faults,
        others,
    )


def _others_cpu(pids: tuple[int, ...]) -> float | None:
    """User + system CPU time of these processes together (None when there are none to read)."""
    times = [t for t in (_cpu_seconds(pid) for pid in pids) if t is not None]
    return sum(times) if times else None


def _stat(pid: int | None) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    if pid is None:
        return None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _counters(pid: int | None) -> tuple[float, int] | None:
    """System CPU seconds and minor page faults of a process."""
    fields = _stat(pid)
    return (int(fields[12]) / os.sysconf("SC_CLK_TCK"), int(fields[7])) if fields else None


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process, all its threads."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else None


def probe_keepalive(target: Target, count: int = 20) -> int:
    """How many sequential requests one keep-alive connection carries before a 5 s stall (count = all)."""
    conn = target.connection(ssl.create_default_context(cafile=str(target.cafile)), timeout=5.0)
    try:
        for n in range(count):
            try:
                conn.request("GET", PATH)
                response = conn.getresponse()
                response.read()
            except TimeoutError:
                return n
            if response.status != 200:
                raise SystemExit(f"bench: {target.name} answered {response.status}: {response.read()[:300]!r}")
        return count
    finally:
        conn.close()


# --- processes ------------------------------------------------------------------------------------------------


def _pinned(command: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None else command


def _pin(pid: int, cpu: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], check=True, capture_output=True)  # noqa: S603, S607


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_port(port: int, process: subprocess.Popen[Any], name: str, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench: {name} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: {name} did not listen on {port}")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the run --------------------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(results: dict[str, dict[str, list[Result]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for config, by_load in results.items():
        out[config] = {}
        for load, runs in by_load.items():
            out[config][load] = {
                "rps": median([r.rps for r in runs]),
                "p50_ms": median([r.pct(50) for r in runs]),
                "p99_ms": median([r.pct(99) for r in runs]),
                "errors": float(sum(r.errors for r in runs)),
                "requests": float(sum(len(r.latencies_ms) for r in runs)),
                "proxy_cpu_us_per_request": median([r.cpu_us_per_request for r in runs]),
                "proxy_sys_us_per_request": median([r.sys_us_per_request for r in runs]),
                "proxy_faults_per_request": median([r.faults_per_request for r in runs]),
                "service_cpu_us_per_request": median([r.others_us_per_request for r in runs]),
            }
    base = out.get("mitmdump", {})
    for figures_by_load in out.values():
        for load, figures in figures_by_load.items():
            ref = base.get(load)
            if ref:
                figures["rps_vs_mitmdump"] = figures["rps"] / ref["rps"] if ref["rps"] else float("nan")
                figures["added_p50_ms"] = figures["p50_ms"] - ref["p50_ms"]
                figures["cpu_vs_mitmdump"] = figures["proxy_cpu_us_per_request"] / ref["proxy_cpu_us_per_request"]
    return out


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        f"{'config':<11}{'load':<12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x mitmdump':>12}{'+p50 ms':>9}"
        f"{'CPU us/req':>12}{'x CPU':>8}{'errors':>8}"
    ]
    for config, by_load in summary.items():
        for load, f in by_load.items():
            ratio = f.get("rps_vs_mitmdump", float("nan"))
            added = f.get("added_p50_ms", float("nan"))
            lines.append(
                f"{config:<11}{load:<12}{f['rps']:>9.0f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}"
                f"{ratio:>11.2f}x{added:>+9.2f}{f.get('proxy_cpu_us_per_request', float('nan')):>12.0f}"
                f"{f.get('cpu_vs_mitmdump', float('nan')):>7.2f}x{int(f['errors']):>8}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=1000, help="Requests per load per round [1000].")
    p.add_argument("--rounds", type=int, default=3, help="Rounds; figures are medians over them [3].")
    p.add_argument("--warmup", type=int, default=200, help="Warm-up requests per configuration [200].")
    p.add_argument("--json", action="store_true", help="Print the figures as JSON on stdout (progress on stderr).")
    p.add_argument("--no-pin", action="store_true", help="Do not pin the proxies to core 1 (the rest to core 0).")
    p.add_argument(
        "--configs", default="direct,mitmdump,dataplane,egress", help="Comma-separated subset to run, in order."
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="With --baseline: after the rounds, N paired runs of each change against its baseline (order ABBA, "
        "--pair-requests each, sequential and c8); the medians of the paired ratios cancel the machine's drift [0].",
    )
    p.add_argument("--pair-requests", type=int, default=400, help="Requests per run of a pair [400].")
    p.add_argument("--profile", type=Path, help="After the run, py-spy the data plane under c8 load into FILE.")
    p.add_argument(
        "--profile-target",
        default="dataplane",
        help="Which configuration --profile samples: dataplane, egress, dp-before or eg-before [dataplane].",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="Another checkout (e.g. a `git worktree` of the previous release): its data plane runs too, as "
        "`dp-before` and `eg-before`, interleaved with this tree's in the same rounds.",
    )
    args = p.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if args.baseline is not None:
        if not (args.baseline / "dataplane" / "proxy.py").is_file():
            p.error(f"--baseline {args.baseline}: not an Aileron checkout (no dataplane/proxy.py)")
        renamed = {"dataplane": "dp-before", "egress": "eg-before"}
        configs += [renamed[c] for c in configs if c in renamed]

    cores = os.cpu_count() or 1
    pin = not args.no_pin and cores >= 2 and shutil.which("taskset") is not None
    proxy_cpu, other_cpu = ("1", "0") if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, {0})  # the client, and the children it starts unpinned (aileron service)
    started = time.monotonic()

    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aileron-proxy-bench-")))
        upstream_port, upstream_ca = stack.enter_context(nginx_upstream(folder / "nginx", other_cpu))
        log(f"nginx upstream on 127.0.0.1:{upstream_port}")
        targets: dict[str, Target] = {}
        ail: Aileron | None = None
        if "direct" in configs:
            targets["direct"] = Target("direct", ("127.0.0.1", upstream_port), None, None, upstream_ca)
        if "mitmdump" in configs:
            mport, mca, mpid = stack.enter_context(bare_mitmdump(folder, upstream_ca, proxy_cpu))
            targets["mitmdump"] = Target(
                "mitmdump", ("127.0.0.1", mport), ("127.0.0.1", upstream_port), None, mca, mpid
            )
            log(f"mitmdump on 127.0.0.1:{mport}")
        if "dataplane" in configs or "egress" in configs:
            log("starting aileron service (API, worker, beat, data plane) ...")
            ail = stack.enter_context(aileron(folder / "aileron", upstream_port, upstream_ca))
            if pin:
                _pin(ail.dataplane_pid, "1")
            auth = f"aileron:{ail.token}"
            proxy = ("127.0.0.1", ail.proxy_port)
            if "dataplane" in configs:
                targets["dataplane"] = Target(
                    "dataplane",
                    proxy,
                    (CONNECTOR_HOST, 443),
                    auth,
                    ail.ca_file,
                    ail.dataplane_pid,
                    tuple(ail.service_pids),
                )
            if "egress" in configs:
                targets["egress"] = Target("egress", proxy, (EGRESS_HOST, 443), auth, ail.ca_file, ail.dataplane_pid)
            log(f"data plane on 127.0.0.1:{ail.proxy_port} (pid {ail.dataplane_pid})")
        if args.baseline is not None and ("dp-before" in configs or "eg-before" in configs):
            log(f"starting the baseline's aileron service from {args.baseline} ...")
            before = stack.enter_context(aileron(folder / "before", upstream_port, upstream_ca, code=args.baseline))
            if pin:
                _pin(before.dataplane_pid, "1")
            bauth, bproxy = f"aileron:{before.token}", ("127.0.0.1", before.proxy_port)
            targets["dp-before"] = Target(
                "dp-before",
                bproxy,
                (CONNECTOR_HOST, 443),
                bauth,
                before.ca_file,
                before.dataplane_pid,
                tuple(before.service_pids),
            )
            targets["eg-before"] = Target(
                "eg-before", bproxy, (EGRESS_HOST, 443), bauth, before.ca_file, before.dataplane_pid
            )
            log(f"baseline data plane on 127.0.0.1:{before.proxy_port} (pid {before.dataplane_pid})")
        targets = {name: targets[name] for name in configs if name in targets}

        sent = collections.Counter[str]()  # requests through the data plane (answered ones), warm-ups included
        failed: dict[str, str] = {}
        for name, target in list(targets.items()):
            carried = probe_keepalive(target)
            sent[name] += carried
            if carried < 20:
                failed[name] = f"stalled: request {carried + 1} on one keep-alive connection never got an answer"
                log(f"{name}: {failed[name]}; skipped")
                del targets[name]
                continue
            warm = run_load(target, 4, args.warmup)
            sent[name] += sum(warm.statuses.values()) + 4 * 3
            if warm.errors or warm.statuses.get(200, 0) != args.warmup:
                failed[name] = f"warm-up failed: statuses {warm.statuses}, errors {warm.errors}"
                log(f"{name}: {failed[name]}; skipped")
                del targets[name]
        results: dict[str, dict[str, list[Result]]] = {name: {load: [] for load, _ in LOADS} for name in targets}
        for round_no in range(args.rounds):
            for name, target in targets.items():
                for load, workers in LOADS:
                    result = run_load(target, workers, args.requests)
                    sent[name] += sum(result.statuses.values()) + workers * 3
                    results[name][load].append(result)
                    log(
                        f"round {round_no + 1}/{args.rounds} {name:<9} {load:<10} {result.rps:7.0f} req/s "
                        f"p50 {result.pct(50):6.2f} ms  p99 {result.pct(99):6.2f} ms  errors {result.errors}"
                    )
        paired = run_pairs(targets, args.pairs, args.pair_requests, sent)
        elapsed = time.monotonic() - started

        audit: dict[str, Any] = {}
        if ail is not None:
            expected = sent["dataplane"] + sent["egress"]
            expected_connector = sent["dataplane"]
            deadline = time.monotonic() + 60
            total = connector = 0
            while time.monotonic() < deadline:
                total = ail.audit_count()
                connector = ail.audit_count(action="github.get-repo")
                if total >= expected:
                    break
                time.sleep(0.5)
            audit = {
                "records_in_control_plane": total,
                "github_get_repo_records": connector,
                "requests_through_data_plane": expected,
                "credentialed_requests": expected_connector,
            }
            log(f"audit: {total} records for the session in the control plane, {expected} requests sent")

        profile: dict[str, Any] = {}
        profiled = targets.get(args.profile_target)
        if args.profile is not None and profiled is not None and profiled.pid is not None:
            profile = profile_dataplane(profiled.pid, profiled, args.profile, max(args.requests, 1500))

    summary = summarize(results)
    meta = {
        "cores": cores,
        "pinned": pin,
        "upstream": "nginx (Debian), HTTPS, loopback, static JSON body",
        "client": "Python http.client, one thread and one keep-alive connection per worker, TLS verified",
        "requests_per_run": args.requests,
        "rounds": args.rounds,
        "elapsed_s": round(elapsed, 1),
    }
    if args.json:
        print(
            json.dumps(
                {
                    "meta": meta,
                    "figures": summary,
                    "paired": paired,
                    "failed": failed,
                    "audit": audit,
                    "profile": profile,
                },
                indent=1,
            )
        )
        return 0
    print(
        f"Proxy bench: {args.requests} requests per run, {args.rounds} rounds, medians over rounds "
        f"({elapsed:.0f} s). Upstream: nginx over HTTPS on loopback. Client: Python http.client, "
        "one thread + one keep-alive connection per worker, TLS verified."
    )
    if pin:
        print(
            f"This machine has {cores} cores shared by client, proxy and upstream: each proxy (mitmdump; the data "
            "plane's `python -m dataplane.server`) is pinned to core 1; client, nginx and the rest of `aileron "
            "service` (API, worker, beat) share core 0."
        )
    else:
        print(f"This machine has {cores} cores shared by client, proxy and upstream (nothing pinned).")
    print("dataplane = credentialed github.get-repo (allow + inject + durable audit); egress = uncredentialed host.")
    print()
    print(table(summary))
    for name, why in failed.items():
        print(f"{name:<11}FAILED: {why}")
    print()
    for load, _ in LOADS:
        dp, md = summary.get("dataplane", {}).get(load), summary.get("mitmdump", {}).get(load)
        if dp and md:
            ok_rps = dp["rps_vs_mitmdump"] >= 0.9
            ok_p50 = dp["added_p50_ms"] < 1.0
            print(
                f"target {load:<10}: throughput {dp['rps_vs_mitmdump']:.2f}x bare mitmdump (>= 0.9x: "
                f"{'met' if ok_rps else 'NOT met'}), added p50 {dp['added_p50_ms']:+.2f} ms (< 1 ms: "
                f"{'met' if ok_p50 else 'NOT met'})"
            )
    for now_name, before_name in (("dataplane", "dp-before"), ("egress", "eg-before")):
        for load, _ in LOADS:
            cur, old = summary.get(now_name, {}).get(load), summary.get(before_name, {}).get(load)
            if cur and old:
                print(
                    f"{now_name:<9} vs baseline {load:<10}: throughput {cur['rps'] / old['rps']:.3f}x, "
                    f"p50 {cur['p50_ms']:.2f} vs {old['p50_ms']:.2f} ms ({cur['p50_ms'] - old['p50_ms']:+.2f} ms), "
                    f"CPU/request {cur['proxy_cpu_us_per_request'] / old['proxy_cpu_us_per_request']:.3f}x "
                    f"(system {cur['proxy_sys_us_per_request']:.0f} vs {old['proxy_sys_us_per_request']:.0f} us, "
                    f"page faults {cur['proxy_faults_per_request']:.1f} vs {old['proxy_faults_per_request']:.1f}; "
                    f"rest of the service {cur['service_cpu_us_per_request']:.0f} vs "
                    f"{old['service_cpu_us_per_request']:.0f} us/request)"
                )
    for line in paired_lines(paired):
        print(line)
    if audit:
        print(
            f"audit: {audit['records_in_control_plane']} records for the bench session reached the control plane "
            f"({audit['github_get_repo_records']} github.get-repo) for {audit['requests_through_data_plane']} "
            f"requests sent through the data plane ({audit['credentialed_requests']} credentialed)"
        )
    if profile:
        print(f"\nprofile ({profile['file']}, {profile['samples']} samples), top self time in the data plane:")
        for line in profile["top_self"]:
            print(f"  {line}")
        print("inclusive time in Aileron's own code (dataplane, policies, connectors, vaults):")
        for line in profile["top_inclusive_ours"][:15]:
            print(f"  {line}")
    return 0


PAIRS = (("dataplane", "dp-before"), ("egress", "eg-before"))


def run_pairs(
    targets: dict[str, Target], pairs: int, requests: int, sent: collections.Counter[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each change against its baseline, run back to back `pairs` times per load (ABBA: the order alternates),
    as paired ratios: what the machine does meanwhile (other tenants, frequency) hits both runs of a pair."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for now_name, before_name in PAIRS:
        if pairs <= 0 or now_name not in targets or before_name not in targets:
            continue
        for load, workers in LOADS[:2]:
            rps: list[float] = []
            cpu: list[float] = []
            service: list[float] = []
            for n in range(pairs):
                order = (now_name, before_name) if n % 2 == 0 else (before_name, now_name)
                got: dict[str, Result] = {}
                for name in order:
                    got[name] = run_load(targets[name], workers, requests)
                    sent[name] += sum(got[name].statuses.values()) + workers * 3
                cur, old = got[now_name], got[before_name]
                rps.append(cur.rps / old.rps)
                if cur.proxy_cpu_seconds and old.proxy_cpu_seconds:
                    cpu.append(cur.cpu_us_per_request / old.cpu_us_per_request)
                if cur.others_cpu_seconds and old.others_cpu_seconds:
                    service.append(cur.others_us_per_request / old.others_us_per_request)
                log(f"pair {n + 1}/{pairs} {now_name} vs {before_name} {load}: {rps[-1]:.3f}x")
            out.setdefault(now_name, {})[load] = {
                "baseline": before_name,
                "pairs": pairs,
                "rps_ratio_median": median(rps),
                "rps_ratio_quartiles": _quartiles(rps),
                "cpu_ratio_median": median(cpu) if cpu else None,
                "cpu_ratio_quartiles": _quartiles(cpu) if cpu else None,
                "service_cpu_ratio_median": median(service) if service else None,
            }
    return out


def _quartiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]


def paired_lines(paired: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for now_name, loads in paired.items():
        for load, f in loads.items():
            low, high = f["rps_ratio_quartiles"]
            line = (
                f"paired {now_name:<9} vs {f['baseline']:<9} {load:<10}: throughput {f['rps_ratio_median']:.3f}x "
                f"(quartiles {low:.3f}-{high:.3f}, {f['pairs']} pairs)"
            )
            if f["cpu_ratio_median"] is not None:
                clow, chigh = f["cpu_ratio_quartiles"]
                line += f", CPU/request {f['cpu_ratio_median']:.3f}x (quartiles {clow:.3f}-{chigh:.3f})"
            if f.get("service_cpu_ratio_median") is not None:
                line += f", rest of the service's CPU/request {f['service_cpu_ratio_median']:.3f}x"
            lines.append(line)
    return lines


def profile_dataplane(pid: int, target: Target, out: Path, requests: int) -> dict[str, Any]:
    """py-spy the data plane (collapsed stacks of the thread holding the GIL, i.e. CPU on the proxy's core)
    while it serves `requests` at c8; summarize self time, and inclusive time of the data plane's own code."""
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(spy).exists():
        log("--profile: py-spy is not installed (pip install py-spy); skipped")
        return {}
    spy_proc = subprocess.Popen(  # noqa: S603
        [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "500", "--gil", "--output", str(out)]
        + ["--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    run_load(target, 8, requests)
    spy_proc.send_signal(signal.SIGINT)
    spy_proc.wait(timeout=30)
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            if any(f"({pkg}/" in frame for pkg in ("dataplane", "policies", "connectors", "vaults")):
                inclusive[frame] += n
    return {
        "file": str(out),
        "samples": samples,
        "top_self": [f"{100 * n / samples:5.1f}%  {frame}" for frame, n in self_time.most_common(15)],
        "top_inclusive_ours": [f"{100 * n / samples:5.1f}%  {frame}" for frame, n in inclusive.most_common(25)],
    }


if __name__ == "__main__":
    sys.exit(main())
