"""Fixtures for tests that run `aileron service` as real processes (a plugin: see the root conftest)."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    url: str
    port: int
    proxy_port: int
    env: dict[str, str]
    home: Path
    process: subprocess.Popen[bytes]
    log: Path
    host: str = "127.0.0.1"

    def aileron(
        self, *args: str, check: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "aileron"), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"aileron service exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health/", timeout=2).status_code == 200 and self.proxy_listening():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"aileron service did not become healthy:\n{self.log.read_text()}")

    def proxy_listening(self) -> bool:
        try:
            socket.create_connection((self.host, self.proxy_port), timeout=1).close()
        except OSError:
            return False
        return True


@contextlib.contextmanager
def isolated_database_url() -> Iterator[str | None]:
    """With DATABASE_URL set, a fresh PostgreSQL database for the real processes, dropped afterwards."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        yield None
        return
    import psycopg

    name = f"aileron_e2e_{secrets.token_hex(4)}"
    parts = urlsplit(base)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def isolated_redis_url() -> str | None:
    """With REDIS_URL set, a Redis database of its own (tests.plugin.redis_index), emptied first."""
    from tests.plugin import redis_index

    base = os.environ.get("REDIS_URL")
    if not base:
        return None
    import redis

    url = urlunsplit(urlsplit(base)._replace(path=f"/{redis_index(service=True)}"))
    redis.Redis.from_url(url).flushdb()
    return url


@contextlib.contextmanager
def running_service(
    folder: Path,
    extra_env: dict[str, str] | None = None,
    service_args: tuple[str, ...] = (),
    *,
    cwd: Path | None = None,
    host: str = "127.0.0.1",
) -> Iterator[Service]:
    """`aileron service` in its own AILERON_HOME (and, in the Postgres run, its own database); `cwd`: where its
    `python -m` children start, which is where they import the project's packages from first. `host`: the
    address its API and proxy listen on (another than loopback for CLIs in other network namespaces)."""
    with isolated_database_url() as database_url:
        home = folder / "home"
        port = free_port()
        proxy_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AILERON_", "DJANGO_"))}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        env["AILERON_HOME"] = str(home)
        env["AILERON_PASSPHRASE"] = "correct horse battery staple"
        # A module's tests make many people from one address: the rates a test means to hit it sets itself.
        for scope in (
            "SIGNUP",
            "INVITATION_ACCEPT",
            "TOKEN_CREATE",
            "APPROVAL_LINK",
            "AUDIT_VERIFY",
            "AUDIT_CHECKPOINT",
        ):
            env[f"AILERON_THROTTLE_{scope}"] = "100000/hour"
        redis_url = isolated_redis_url()
        if database_url:
            env["DATABASE_URL"] = database_url
        if redis_url:
            env["REDIS_URL"] = redis_url
        env.update(extra_env or {})
        log = folder / "service.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(BIN / "aileron"),
                    "service",
                    "--api-port",
                    str(port),
                    "--proxy-port",
                    str(proxy_port),
                    *(("--host", host) if host != "127.0.0.1" else ()),
                    *service_args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )
        svc = Service(
            url=f"http://{host}:{port}",
            port=port,
            proxy_port=proxy_port,
            env=env,
            home=home,
            process=process,
            log=log,
            host=host,
        )
        try:
            svc.wait_healthy()
            yield svc
        finally:
            if process.poll() is None:
                os.killpg(process.pid, 15)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    process.wait()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A service of this test's own."""
    with running_service(tmp_path) as svc:
        yield svc


@pytest.fixture(scope="module")
def module_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service shared by a module's tests (for tests that each make their own users)."""
    with running_service(tmp_path_factory.mktemp("service")) as svc:
        yield svc
