"""`aileron service`: runs the whole v4 runtime as one process group and supervises it.

Children: the ASGI server (HTTP and websockets), the Celery worker, Celery beat and the data plane (proxy and
credential service, `python -m dataplane.server`). In the v4.x split the same children run on different
machines; here one supervisor starts them, reports where each listens, and stops all of them when one dies or
on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from aileron_cli.client import CliError

READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the service's own
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _load_settings() -> None:
    """Validate the settings (django.setup). Raises CliError with one line on failure."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aileron_site.settings")
    from aileron_site.config import ConfigError

    try:
        import django

        django.setup()
    except ConfigError as exc:
        raise CliError(f"configuration error: {exc}", exit_code=2) from None


def _prepare_database(out: Callable[[str], None]) -> dict[str, str]:
    """Migrate, and describe the backends (settings loaded). Raises CliError with one line on failure."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import DatabaseError, connection

    out("migrating the database…")
    try:
        call_command("migrate", interactive=False, verbosity=0)
    except DatabaseError as exc:
        raise CliError(f"cannot migrate the database: {str(exc).splitlines()[0]}") from None
    token_file = _mint_dataplane_token(settings.AILERON_HOME)
    db = settings.DATABASES["default"]
    where = db["NAME"] if connection.vendor == "sqlite" else f"{db.get('HOST') or 'localhost'}/{db['NAME']}"
    return {
        "mode": settings.AILERON_MODE,
        "home": str(settings.AILERON_HOME),
        "database": f"{connection.vendor} ({where})",
        "channel_layer": str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1],
        "broker": str(settings.CELERY_BROKER_URL).split("://", 1)[0],
        "beat_schedule": str(settings.CELERY_BEAT_SCHEDULE_FILENAME),
        "service_token_file": str(token_file),
        "key_socket": str(settings.AILERON_HOME / "run" / "credentials.sock"),
    }


def _mint_dataplane_token(home: Path) -> Path:
    """A fresh service token for this run's data plane, in a 0600 file; the previous one is revoked."""
    from tenants.models import ApiToken
    from tenants.services import service_token_create, token_revoke

    folder = home / "dataplane"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "service-token"
    for old in ApiToken.objects.filter(kind="svc", name="aileron service", revoked_at__isnull=True):
        token_revoke(acting=None, token=old)  # the system replaces its own data plane's token
    issued = service_token_create(name="aileron service", expires_in_days=365)  # re-minted at every start
    tmp = folder / ".service-token.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.plaintext)
    os.replace(tmp, path)
    return path


def _child_env() -> dict[str, str]:
    """The service's environment, less the user's secrets: no child needs a passphrase or a login token."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("AILERON_PASSPHRASE", "AILERON_LOGIN_TOKEN", "AILERON_INVITATION")
    }


class Supervisor:
    def __init__(self, children: list[Child], out: Callable[[str], None]) -> None:
        self.children = children
        self.out = out
        self.stopping = threading.Event()
        self.exit_code = 0

    def start(self) -> None:
        for child in self.children:
            # Same process group as us: a terminal's Ctrl-C reaches every child, and so does our SIGTERM.
            env = {**_child_env(), **child.env}
            child.process = subprocess.Popen(child.argv, stdin=subprocess.DEVNULL, env=env)  # noqa: S603

    def dead_child(self) -> Child | None:
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return child
        return None

    def stop(self) -> None:
        """Stop the children, the last started first: the data plane ships its last audit records to the API and
        closes its long polls (the key-channel relay's) before the API goes, so neither waits on the other."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in reversed(self.children):
            if child.process is None:
                continue
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out(f"{child.name} did not stop in {STOP_GRACE_SECONDS:.0f}s; killing it")
                child.process.kill()
                child.process.wait()

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self.stopping.is_set():
            dead = self.dead_child()
            if dead is not None:
                assert dead.process is not None  # noqa: S101
                raise CliError(f"{dead.name} exited during start-up with code {dead.process.returncode}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if not self.stopping.is_set():
            raise CliError(f"the API did not become ready within {READY_TIMEOUT_SECONDS:.0f}s")

    def run_until_stopped(self) -> int:
        while not self.stopping.wait(0.5):
            dead = self.dead_child()
            if dead is not None:
                assert dead.process is not None  # noqa: S101
                self.out(f"{dead.name} exited unexpectedly with code {dead.process.returncode}; stopping the rest")
                return 1
        return 0


def run_service(
    *,
    host: str,
    api_port: int,
    proxy_port: int,
    proxy_workers: int = 1,
    out: Callable[[str], None],
    summary: Callable[[dict[str, str]], None],
) -> int:
    # Settings first: a bad one is reported as such even while another service holds the ports.
    _load_settings()
    if not _port_free(host, api_port):
        raise CliError(f"cannot listen on {host}:{api_port}: the address is in use or not available", exit_code=2)
    if proxy_port == api_port or not _port_free(host, proxy_port):
        raise CliError(f"cannot listen on {host}:{proxy_port}: the address is in use or not available", exit_code=2)
    info = _prepare_database(out)
    python = sys.executable
    api_url = f"http://{'[' + host + ']' if ':' in host else host}:{api_port}"
    relay_env = (
        {"AILERON_EVENT_RELAY_URL": api_url, "AILERON_EVENT_RELAY_TOKEN_FILE": info["service_token_file"]}
        if info["channel_layer"] == "InMemoryChannelLayer"
        else {}
    )
    # Where agents reach this service's proxy, as `aileron launch` learns it from the API (health `proxy`); an
    # operator's AILERON_PUBLIC_PROXY (a proxy behind another address) wins.
    listen = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a listening address, not a bind
    shown = f"[{listen}]" if ":" in listen else listen
    public_proxy = os.environ.get("AILERON_PUBLIC_PROXY") or f"{shown}:{proxy_port}"
    # Where people open the links in notifications (the worker writes them); an operator's own wins.
    public_url = {"AILERON_PUBLIC_URL": os.environ.get("AILERON_PUBLIC_URL") or f"http://{shown}:{api_port}"}
    api_env = {"AILERON_PUBLIC_PROXY": public_proxy, **public_url}
    if "AILERON_ALLOWED_HOSTS" not in os.environ and listen not in ("127.0.0.1", "localhost", "::1"):
        # Serving on an address of this machine's (for teammates on others): requests name it as their Host.
        api_env["AILERON_ALLOWED_HOSTS"] = ",".join(("localhost", "127.0.0.1", "[::1]", shown))
    children = [
        Child(
            "api",
            [
                python,
                "-m",
                "daphne",
                "--bind",
                host,
                "--port",
                str(api_port),
                "--verbosity",
                "1",
                "aileron_site.asgi:application",
            ],
            env=api_env,
        ),
        Child(
            "worker",
            [
                python,
                "-m",
                "celery",
                "--app",
                "aileron_site",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--loglevel",
                "INFO",
                "--hostname",
                f"aileron-worker-{os.getpid()}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            # An in-memory channel layer reaches only the API process: the worker's approval events (expiry)
            # go through the API instead (approvals.events).
            env={**relay_env, **public_url},
        ),
        Child(
            "dataplane",
            [
                python,
                "-m",
                "dataplane.server",
                "--host",
                host,
                "--port",
                str(proxy_port),
                "--workers",
                str(proxy_workers),
                "--socket",
                info["key_socket"],
                "--home",
                info["home"],
                "--api",
                api_url,
                "--service-token-file",
                info["service_token_file"],
            ],
        ),
        Child(
            "beat",
            [
                python,
                "-m",
                "celery",
                "--app",
                "aileron_site",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                info["beat_schedule"],
            ],
        ),
    ]
    supervisor = Supervisor(children, out)
    previous = {sig: signal.signal(sig, supervisor.handle_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        supervisor.start()
        shown_host = f"[{host}]" if ":" in host else host
        base = f"http://{shown_host}:{api_port}"
        supervisor.wait_ready(f"{base}/api/v1/health/")
        if supervisor.stopping.is_set():
            return 0
        summary(
            {
                "api": f"{base}/api/v1/",
                "docs": f"{base}/api/docs/",
                "approvals": f"{base}/approvals/ (`aileron approval open` signs you in)",
                "worker": f"celery worker + beat via {info['broker']}",
                "proxy": f"http://{shown_host}:{proxy_port} (HTTPS_PROXY for agents)",
                "credentials": f"credential service, key channel {info['key_socket']}",
                **{k: info[k] for k in ("mode", "database", "channel_layer", "home")},
            }
        )
        code = supervisor.run_until_stopped()
        out("stopping…")
        return code
    finally:
        supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
