"""CI helper: start `aileron service` on a fresh database, log in, and fuzz the live API with schemathesis.

Only `not_a_server_error` is enforced: whatever schemathesis sends, the API must never answer 5xx.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis

BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--max-time", default="240")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="aileron-fuzz-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AILERON_", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["AILERON_HOME"] = str(home)
    env["AILERON_PASSPHRASE"] = secrets.token_urlsafe(16)
    db_name = None
    admin_url = None
    if args.database_url:
        parts = urlsplit(args.database_url)
        db_name = f"aileron_fuzz_{secrets.token_hex(4)}"
        admin_url = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db_name}"')
        env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{db_name}"))
    if args.redis_url:
        env["REDIS_URL"] = urlunsplit(urlsplit(args.redis_url)._replace(path="/13"))
        # This run's own database, emptied first: the rate-limit counts an earlier run left there (its fuzzing
        # spends the sign-up allowance of 127.0.0.1 for an hour) would refuse the `aileron init` below.
        redis.Redis.from_url(env["REDIS_URL"]).flushdb()

    port = 8490
    url = f"http://127.0.0.1:{port}"
    log = (home / "service.log").open("wb")
    service = subprocess.Popen(
        [str(BIN / "aileron"), "service", "--api-port", str(port), "--proxy-port", str(port + 1)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or service.poll() is not None:
                print((home / "service.log").read_text())
                return 1
            time.sleep(0.3)
        init = subprocess.run(
            [str(BIN / "aileron"), "init", "--org", "Fuzz", "--email", "fuzz@example.com", "--server", url, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        org = json.loads(init.stdout)["organization"]["id"]
        token = json.loads((home / "cli.json").read_text())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        httpx.post(f"{url}/api/v1/orgs/{org}/teams/", json={"name": "Platform"}, headers=auth).raise_for_status()
        httpx.post(f"{url}/api/v1/orgs/{org}/projects/", json={"name": "Bot"}, headers=auth).raise_for_status()
        # Aim the fuzzing inside a real organization, and keep schemathesis from revoking its own token or
        # deleting the organization under itself (both are covered by the unit tests).
        config = home / "schemathesis.toml"
        config.write_text(
            f'[parameters]\n"path.org_id" = "{org}"\n\n'
            '[[operations]]\ninclude-name = "DELETE /api/v1/tokens/{token_id}/"\nenabled = false\n\n'
            '[[operations]]\ninclude-name = "DELETE /api/v1/orgs/{org_id}/"\nenabled = false\n'
        )
        result = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{url}/api/schema/",
                "--checks",
                "not_a_server_error",
                "--header",
                f"Authorization: Bearer {token}",
                "--max-time",
                args.max_time,
                "--workers",
                "2",
                "--request-timeout",
                "20",
                "--no-color",
            ],
            env=env,
        )
        if result.returncode != 0:
            lines = (home / "service.log").read_text().splitlines()
            print("--- service log: every traceback ---")
            for start in [i for i, line in enumerate(lines) if line.startswith("Traceback")][:10]:
                end = next((j for j in range(start + 1, len(lines)) if lines[j] and not lines[j][0].isspace()), start)
                print("\n".join(lines[start : end + 1]))
            print("--- service log (tail) ---")
            print("\n".join(lines[-40:]))
        return result.returncode
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGINT)
            try:
                service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
        if admin_url and db_name:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
