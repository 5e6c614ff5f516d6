"""The data plane process: the mediation proxy, the credential service and its key channel, the audit spool.

    python -m dataplane.server --api http://127.0.0.1:8000 --service-token-file FILE [--port 8480]
    aileron dataplane ...            (the same, from the CLI)

It talks to the control plane only over REST with its service token, so it runs unchanged on another machine.
Settings beyond the flags come from the environment: AILERON_HOME (spool, CA seed, key channel),
AILERON_UPSTREAM_RESOLVE / AILERON_UPSTREAM_CA (private or test upstreams), AILERON_PRICE_TABLE,
AILERON_MAX_BODY_BYTES, AILERON_SESSION_CACHE_SECONDS, and the bounds of dataplane.limits:
AILERON_BODY_BUDGET_BYTES, AILERON_SESSION_BODY_SHARE_BYTES, AILERON_BODY_TIMEOUT_SECONDS,
AILERON_MIN_BODY_RATE_BYTES, AILERON_MAX_HEADER_BYTES, AILERON_MAX_HEADER_FIELDS, AILERON_HEADER_TIMEOUT_SECONDS,
AILERON_UPSTREAM_CONNECT_TIMEOUT_SECONDS, AILERON_UPSTREAM_RESPONSE_TIMEOUT_SECONDS, and of dataplane.connections:
AILERON_MAX_CONNECTIONS, AILERON_IDLE_TIMEOUT_SECONDS, AILERON_SESSION_MAX_CONNECTIONS, and AILERON_SCAN_WORKERS,
AILERON_SCAN_TIMEOUT_SECONDS (dataplane.scanpool). Imports no Django.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
from cryptography.hazmat.primitives.asymmetric import x25519
from mitmproxy import master, options
from mitmproxy.addons import core, next_layer, proxyserver

from connectors.package import ConnectorError
from connectors.registry import installed
from dataplane import http1_strict, keychannel, limits, rawtcp, scanpool
from dataplane.attestation import AttestationError, SoftwareProvider, dataplane_config
from dataplane.connections import ConnectionGuard, quiet_accept_errors, raise_open_files
from dataplane.control import ControlPlane
from dataplane.credentials import DEFAULT_BUNDLE_TTL_SECONDS, DEFAULT_TTL_SECONDS, CredentialService
from dataplane.guard import ResolveError, Resolver, parse_resolve_map
from dataplane.limits import BodyBudget, Limits
from dataplane.proxy import DEFAULT_MAX_BODY, AileronProxy
from dataplane.session_ca import SeedError, seed_load_or_create
from dataplane.spool import AuditSpool
from dataplane.tlsconfig import SessionTlsConfig
from dataplane.usage import PriceTable
from dataplane.workers import RemoteCredentials, serve_worker

DEFAULT_PORT = 8480
FIRST_REQUEST_GRACE = 5.0  # seconds beyond the header timeout for a connection's first request head


class StartupError(RuntimeError):
    """The data plane cannot start; the message is one line for the operator."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    api: str
    token: str
    home: Path
    socket: Path
    resolve: dict[tuple[str, int], tuple[str, int]]
    upstream_ca: Path | None
    price_table: Path | None
    max_body: int
    session_cache: float
    limits: Limits = Limits()
    workers: int = 1
    scan_workers: int = 1  # processes that scan large request bodies for credentials (dataplane.scanpool)
    scan_timeout: float = scanpool.DEFAULT_TIMEOUT  # seconds one body's scan may take
    worker_index: int = 0  # 0: the primary (credential service, key channel); 1..N-1: proxy-only workers
    credentials_fd: int | None = None  # a worker's end of its link to the primary


def _positive(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StartupError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise StartupError(f"{name} must not be negative")
    return value


def _above_zero(name: str, default: float) -> float:
    value = _positive(name, default)
    if value == 0:
        raise StartupError(f"{name} must be more than 0")
    return value


def limits_from_environment(max_body: int) -> Limits:
    """The proxy's bounds (dataplane.limits), each from its AILERON_ variable or its default."""
    d = Limits()
    budget = int(_above_zero("AILERON_BODY_BUDGET_BYTES", max(d.body_budget, max_body)))
    bounds = Limits(
        max_head_bytes=int(_above_zero("AILERON_MAX_HEADER_BYTES", d.max_head_bytes)),
        max_header_fields=int(_above_zero("AILERON_MAX_HEADER_FIELDS", d.max_header_fields)),
        header_timeout=_above_zero("AILERON_HEADER_TIMEOUT_SECONDS", d.header_timeout),
        connect_timeout=_above_zero("AILERON_UPSTREAM_CONNECT_TIMEOUT_SECONDS", d.connect_timeout),
        response_timeout=_above_zero("AILERON_UPSTREAM_RESPONSE_TIMEOUT_SECONDS", d.response_timeout),
        body_budget=budget,
        session_body_share=int(_above_zero("AILERON_SESSION_BODY_SHARE_BYTES", max(budget // 4, max_body))),
        body_timeout=_above_zero("AILERON_BODY_TIMEOUT_SECONDS", d.body_timeout),
        min_body_rate=int(_above_zero("AILERON_MIN_BODY_RATE_BYTES", d.min_body_rate)),
        max_connections=int(_above_zero("AILERON_MAX_CONNECTIONS", d.max_connections)),
        idle_timeout=_above_zero("AILERON_IDLE_TIMEOUT_SECONDS", d.idle_timeout),
        session_connections=int(_above_zero("AILERON_SESSION_MAX_CONNECTIONS", d.session_connections)),
    )
    if bounds.body_budget < max_body:
        raise StartupError(
            f"AILERON_BODY_BUDGET_BYTES ({bounds.body_budget}) must be at least AILERON_MAX_BODY_BYTES ({max_body})"
        )
    if not max_body <= bounds.session_body_share <= bounds.body_budget:
        raise StartupError(
            f"AILERON_SESSION_BODY_SHARE_BYTES ({bounds.session_body_share}) must be between AILERON_MAX_BODY_BYTES "
            f"({max_body}) and AILERON_BODY_BUDGET_BYTES ({bounds.body_budget})"
        )
    return bounds


def settings_from(args: argparse.Namespace) -> Settings:
    home = Path(args.home or os.environ.get("AILERON_HOME") or Path.home() / ".aileron").expanduser()
    try:
        token = args.service_token_file.read_text().strip()
    except OSError as exc:
        raise StartupError(f"cannot read the service token {args.service_token_file}: {exc.strerror}") from None
    try:
        resolve = parse_resolve_map(os.environ.get("AILERON_UPSTREAM_RESOLVE", ""))
    except ResolveError as exc:
        raise StartupError(str(exc)) from None
    upstream_ca = Path(os.environ["AILERON_UPSTREAM_CA"]) if os.environ.get("AILERON_UPSTREAM_CA") else None
    if upstream_ca is not None and not upstream_ca.is_file():
        raise StartupError(f"AILERON_UPSTREAM_CA: {upstream_ca} is not a file")
    price_table = Path(os.environ["AILERON_PRICE_TABLE"]) if os.environ.get("AILERON_PRICE_TABLE") else None
    max_body = int(_positive("AILERON_MAX_BODY_BYTES", DEFAULT_MAX_BODY))
    try:
        scan_workers = scanpool.default_workers()
        scan_timeout = scanpool.default_timeout()
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    return Settings(
        host=args.host,
        port=args.port,
        api=args.api,
        token=token,
        home=home,
        socket=args.socket or home / "run" / "credentials.sock",
        resolve=resolve,
        upstream_ca=upstream_ca,
        price_table=price_table,
        max_body=max_body,
        session_cache=_positive("AILERON_SESSION_CACHE_SECONDS", DEFAULT_BUNDLE_TTL_SECONDS),
        limits=limits_from_environment(max_body),
        workers=args.workers,
        scan_workers=scan_workers,
        scan_timeout=scan_timeout,
        worker_index=args.worker_index,
        credentials_fd=args.credentials_fd,
    )


def _trust_bundle(folder: Path, extra: Path | None) -> str | None:
    """The public roots, plus the operator's extra CA if any (added to, never replacing, the usual trust)."""
    if extra is None:
        return None
    bundle = folder / "upstream-trust.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + extra.read_bytes())
    return str(bundle)


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _listen_with_reuse_port() -> None:
    """Let several worker processes listen on the proxy port (SO_REUSEPORT); mitmproxy has no option for it."""
    original = asyncio.start_server

    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        kwargs.setdefault("reuse_port", True)
        return await original(*args, **kwargs)

    asyncio.start_server = start_server


def _spawn_workers(settings: Settings, argv: list[str]) -> list[tuple[subprocess.Popen[bytes], socket.socket]]:
    """Start the proxy-only workers, each with one end of a socketpair to ask this process for decryptions."""
    started = []
    for index in range(1, settings.workers):
        mine, theirs = socket.socketpair()
        process = subprocess.Popen(  # noqa: S603 - this same program, with our own arguments
            [
                sys.executable,
                "-m",
                "dataplane.server",
                *argv,
                "--worker-index",
                str(index),
                "--credentials-fd",
                str(theirs.fileno()),
            ],
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        started.append((process, mine))
    return started


async def run(settings: Settings, *, argv: list[str] | None = None, ready: asyncio.Event | None = None) -> None:
    primary = settings.worker_index == 0
    folder = settings.home / "dataplane"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if primary and not _port_free(settings.host, settings.port):
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: the address is in use or not available")
    try:
        connectors = installed(settings.home)
    except ConnectorError as exc:
        raise StartupError(f"a connector package is invalid: {exc}") from None
    try:
        seed = seed_load_or_create(folder / "ca-seed")
        prices = PriceTable.load(settings.price_table)
    except (SeedError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    if settings.workers > 1:
        _listen_with_reuse_port()
    control = ControlPlane(settings.api, settings.token)
    credentials: CredentialService | RemoteCredentials
    if primary:
        credentials = CredentialService(control, ttl=DEFAULT_TTL_SECONDS, bundle_ttl=settings.session_cache)
    else:
        if settings.credentials_fd is None:
            raise StartupError("a worker needs --credentials-fd")
        credentials = RemoteCredentials(socket.socket(fileno=settings.credentials_fd))
    spool_folder = folder / ("audit-spool" if primary else f"audit-spool-worker-{settings.worker_index}")
    spool = AuditSpool(spool_folder, control.audit_ship, ship_lines=control.audit_ship_lines)
    proxy = AileronProxy(
        control=control,
        credentials=credentials,
        spool=spool,
        connectors=connectors,
        resolver=Resolver(settings.resolve),
        seed=seed,
        session_ttl=settings.session_cache,
        max_body=settings.max_body,
        prices=prices,
        budget=BodyBudget(settings.limits.body_budget, share=settings.limits.session_body_share),
        session_connections=settings.limits.session_connections,
        connections=ConnectionGuard(
            max_connections=settings.limits.max_connections,
            # later than the head timer, whose 408 answer is clearer where it runs
            first_request_timeout=settings.limits.header_timeout + FIRST_REQUEST_GRACE,
            idle_timeout=settings.limits.idle_timeout,
        ),
        operator_token=settings.token,
        scans=scanpool.ScanPool(workers=settings.scan_workers, timeout=settings.scan_timeout),
    )
    http1_strict.install()  # strict chunked bodies and problem+json where mitmproxy answers by itself
    rawtcp.install()  # a CONNECT under an organization's TCP rule relays raw bytes at once
    limits.install(settings.limits, on_refused=proxy.refuse_head)  # bounded heads, bodies, waits
    # Every client connection may hold an upstream one too, plus what the process keeps open itself.
    open_files = raise_open_files(2 * settings.limits.max_connections + 256)
    if open_files < 2 * settings.limits.max_connections + 64:
        print(
            f"data plane: warning: {open_files} open files allowed; AILERON_MAX_CONNECTIONS "
            f"({settings.limits.max_connections}) needs about {2 * settings.limits.max_connections + 256}",
            file=sys.stderr,
            flush=True,
        )
    quiet_accept_errors(asyncio.get_running_loop())
    opts = options.Options()
    mitm = master.Master(opts, event_loop=asyncio.get_running_loop())
    addons: list[object] = [
        core.Core(),
        proxyserver.Proxyserver(),  # type: ignore[no-untyped-call]
        next_layer.NextLayer(),
        proxy,
        SessionTlsConfig(proxy),  # replaces mitmproxy's TlsConfig: certificates come from each session's CA
    ]
    mitm.addons.add(*addons)  # type: ignore[no-untyped-call]
    opts.update(  # type: ignore[no-untyped-call]
        listen_host=settings.host,
        listen_port=settings.port,
        confdir=str(folder / "mitmproxy"),
        connection_strategy="lazy",
        upstream_cert=False,
        ssl_verify_upstream_trusted_ca=_trust_bundle(folder, settings.upstream_ca),
        # HTTP/1.1 toward agents: every request body then announces its length (Content-Length, or chunked,
        # which credentialed requests may not use) before the decision; an HTTP/2 body need not.
        http2=False,
        stream_large_bodies=None,
        rawtcp=False,  # bytes in a tunnel that do not look like HTTP are refused as HTTP, never piped unchecked
    )
    spool.start()
    proxy.scans.start()
    background: list[asyncio.Task[Any]] = []
    workers: list[tuple[subprocess.Popen[bytes], socket.socket]] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, mitm.shutdown)
    try:
        if isinstance(credentials, CredentialService):
            background.append(asyncio.create_task(_key_channel(credentials, settings.socket)))
        runner = asyncio.create_task(mitm.run())
        await _wait_listening(settings.host, settings.port, runner)
        if isinstance(credentials, CredentialService) and settings.workers > 1:
            workers = _spawn_workers(settings, argv or [])
            for process, link in workers:
                background.append(asyncio.create_task(serve_worker(credentials, link)))
                background.append(asyncio.create_task(_watch(process, mitm)))
        role = "proxy" if primary else f"proxy worker {settings.worker_index}"
        channel = f", key channel {settings.socket}" if primary else ""
        extra = f", {settings.workers} proxy processes" if primary and settings.workers > 1 else ""
        print(f"data plane: {role} on {settings.host}:{settings.port}{channel}{extra}", flush=True)
        # What start-up made (modules, catalog, policies' compiled code) lives as long as the process: keep it out
        # of the collections the reclaimer runs for finished flows, so each one walks only what requests made.
        gc.freeze()
        if ready is not None:
            ready.set()
        await runner
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.terminate()
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, keychannel.ChannelError):
                await task
        for process, _ in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(process.wait, 10)
        await asyncio.to_thread(spool.stop)
        proxy.scans.close()
        credentials.close_all()
        control.close()
        if primary:
            with contextlib.suppress(FileNotFoundError):
                settings.socket.unlink()


async def _key_channel(credentials: CredentialService, path: Path) -> None:
    # A fresh key per start: a master key sealed to an earlier process (or for another one) opens nowhere.
    channel_key = x25519.X25519PrivateKey.generate()
    try:
        provider = SoftwareProvider(
            public_key=channel_key.public_key().public_bytes_raw(),
            config=dataplane_config(ttl_seconds=DEFAULT_TTL_SECONDS),
        )
    except (AttestationError, OSError) as exc:
        raise StartupError(f"cannot measure the data plane: {exc}") from None
    await keychannel.serve(credentials, path, provider=provider, private_key=channel_key)


async def _watch(process: subprocess.Popen[bytes], mitm: master.Master) -> None:
    """A worker that dies takes the data plane down, loudly: the supervisor then stops or restarts it whole."""
    code = await asyncio.to_thread(process.wait)
    print(f"data plane: proxy worker {process.pid} exited with {code}; stopping", file=sys.stderr, flush=True)
    mitm.shutdown()  # type: ignore[no-untyped-call]


async def _wait_listening(host: str, port: int, runner: asyncio.Task[None]) -> None:
    for _ in range(200):
        if runner.done():
            runner.result()
            raise StartupError("the proxy stopped while starting")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise StartupError(f"the proxy did not start listening on {host}:{port}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aileron dataplane", description="Run the Aileron data plane.")
    p.add_argument("--host", default="127.0.0.1", help="Address the proxy listens on.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="Proxy port.")
    p.add_argument("--api", required=True, help="Control plane base URL.")
    p.add_argument("--service-token-file", required=True, type=Path)
    p.add_argument("--home", default=None, help="Data plane state folder [default: AILERON_HOME].")
    p.add_argument("--socket", type=Path, default=None, help="Key channel socket [default: HOME/run/credentials.sock].")
    p.add_argument("--workers", type=int, default=1, help="Proxy processes sharing the port [1].")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--credentials-fd", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(raw)
    if not 1 <= args.workers <= 64:
        print("data plane: --workers must be between 1 and 64", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="data plane: %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from(args)
        asyncio.run(run(settings, argv=raw))
    except (StartupError, keychannel.ChannelError) as exc:
        print(f"data plane: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
