"""`aileron service`, `aileron init` and `aileron status` as a user runs them: real processes, real network."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.service import BIN, Service, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def children_of(pid: int) -> list[int]:
    """Direct children of PID, read from /proc (a bare Debian has no `ps`)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat_text = stat_file.read_text()
        except OSError:
            continue
        fields = stat_text.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def wait_for_worker(service: Service, timeout: float = 45.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(f"{service.url}/api/v1/health/", timeout=5).json()
        if health["worker_age_seconds"] is not None:
            return dict(health)
        time.sleep(0.5)
    raise AssertionError(f"the worker never reported:\n{service.log.read_text()}")


def test_service_init_and_status_work_together(service: Service) -> None:
    before = service.aileron("status", "--json", "--server", service.url)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["login"] is None

    init = service.aileron(
        "init", "--org", "Acme Corp", "--email", "alice@example.com", "--server", service.url, "--json"
    )
    assert init.returncode == 0, init.stderr
    created = json.loads(init.stdout)
    assert created["organization"]["slug"] == "acme-corp" and created["role"] == "owner"
    login_file = service.home / "cli.json"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    assert json.loads(login_file.read_text())["token"].startswith("ail_pat_")

    health = wait_for_worker(service)
    expected_db = "postgresql" if "DATABASE_URL" in service.env else "sqlite"
    expected_layer = "RedisChannelLayer" if "REDIS_URL" in service.env else "InMemoryChannelLayer"
    status = service.aileron("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["reachable"] is True and report["server"] == service.url
    assert report["login"]["user"]["email"] == "alice@example.com"
    assert report["login"]["memberships"][0]["role"] == "owner"
    assert report["service"]["database"] == expected_db == health["database"]
    assert report["service"]["channel_layer"] == expected_layer
    assert report["service"]["status"] == "ok"
    with_proxy = service.aileron("status", "--json", env={"AILERON_PROXY": f"127.0.0.1:{service.proxy_port}"})
    dataplane = json.loads(with_proxy.stdout)["dataplane"]
    health_report = dataplane.pop("health")
    assert dataplane == {"proxy": f"http://127.0.0.1:{service.proxy_port}", "listening": True, "key_channel": True}
    assert health_report["status"] == "ok" and health_report["audit"]["writer"]["state"] == "ok"

    human = service.aileron("status")
    assert human.returncode == 0 and "alice@example.com" in human.stdout and "acme-corp: owner" in human.stdout

    again = service.aileron("init", "--org", "Other", "--email", "bob@example.com", "--server", service.url)
    assert again.returncode == 1
    assert again.stderr.startswith("aileron: already logged in as alice@example.com")
    assert len(again.stderr.strip().splitlines()) == 1


def test_ctrl_c_stops_every_part_cleanly(service: Service) -> None:
    children = children_of(service.process.pid)
    assert len(children) == 4, children  # api, worker, credentials, beat
    os.killpg(service.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert service.process.wait(timeout=30) == 0, service.log.read_text()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived the service"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.url}/api/v1/health/", timeout=2)


def test_a_second_service_on_a_taken_port_fails_with_one_line(service: Service) -> None:
    result = service.aileron("service", "--api-port", str(service.port), "--proxy-port", str(free_port()))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"aileron: cannot listen on 127.0.0.1:{service.port}: the address is in use or not available"
    )


def test_a_dead_worker_takes_the_service_down_rather_than_running_half(service: Service) -> None:
    worker = next(
        pid for pid in children_of(service.process.pid) if "worker" in Path(f"/proc/{pid}/cmdline").read_text()
    )
    os.kill(worker, signal.SIGKILL)
    assert service.process.wait(timeout=30) == 1
    assert "worker exited unexpectedly" in service.log.read_text()


def test_the_cli_reports_an_unreachable_server_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "AILERON_HOME": str(tmp_path)}
    url = f"http://127.0.0.1:{free_port()}"
    human = subprocess.run(
        [str(BIN / "aileron"), "status", "--server", url], env=env, capture_output=True, text=True, timeout=30
    )
    assert human.returncode == 1
    assert human.stderr.strip() == f"aileron: cannot reach the Aileron service at {url} (is `aileron service` running?)"
    machine = subprocess.run(
        [str(BIN / "aileron"), "status", "--json", "--server", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert machine.returncode == 1 and json.loads(machine.stdout)["reachable"] is False


def test_a_bad_setting_stops_the_service_with_one_line_even_while_its_ports_are_taken(tmp_path: Path) -> None:
    """The user's own `make run` may hold the ports: the setting is still the one line they read."""
    env = {**os.environ, "AILERON_HOME": str(tmp_path), "AILERON_MODE": "production", "AILERON_DEBUG": "true"}
    with socket.create_server(("127.0.0.1", 0)) as api, socket.create_server(("127.0.0.1", 0)) as proxy:
        result = subprocess.run(
            [
                str(BIN / "aileron"),
                "service",
                "--api-port",
                str(api.getsockname()[1]),
                "--proxy-port",
                str(proxy.getsockname()[1]),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == "aileron: configuration error: AILERON_DEBUG must be off in production mode"


def test_an_invited_person_joins_with_the_cli(service: Service, tmp_path: Path) -> None:
    init = service.aileron("init", "--org", "Acme", "--email", "alice@example.com", "--server", service.url, "--json")
    assert init.returncode == 0, init.stderr
    org_id = json.loads(init.stdout)["organization"]["id"]
    alice_token = json.loads((service.home / "cli.json").read_text())["token"]
    invitation = httpx.post(
        f"{service.url}/api/v1/orgs/{org_id}/invitations/",
        json={"email": "bob@example.com", "role": "approver"},
        headers={"Authorization": f"Bearer {alice_token}"},
    ).json()["token"]

    bob_env = {**service.env, "AILERON_HOME": str(tmp_path / "bob")}
    joined = subprocess.run(
        [str(BIN / "aileron"), "join", "--server", service.url, "--json"],
        env={**bob_env, "AILERON_INVITATION": invitation},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout)["role"] == "approver"
    status = subprocess.run(
        [str(BIN / "aileron"), "status", "--json"], env=bob_env, capture_output=True, text=True, timeout=60
    )
    memberships = json.loads(status.stdout)["login"]["memberships"]
    assert [(m["slug"], m["role"]) for m in memberships] == [("acme", "approver")]

    reused = subprocess.run(
        [str(BIN / "aileron"), "join", "--server", service.url],
        input=invitation + "\n",  # piped on stdin this time
        env={**service.env, "AILERON_HOME": str(tmp_path / "eve")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reused.returncode == 1
    assert reused.stderr.startswith("aileron: No pending invitation matches that token. (404)")


def test_an_operator_bootstrapped_owner_logs_in_and_gets_keys(service: Service) -> None:
    created = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "django",
            "aileron_org_create",
            "--name",
            "Bank",
            "--owner-email",
            "ops@bank.example",
            "--json",
        ],
        env={**service.env, "DJANGO_SETTINGS_MODULE": "aileron_site.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]
    logged = subprocess.run(
        [str(BIN / "aileron"), "login", "--server", service.url, "--json"],
        input=token,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert logged.returncode == 0, logged.stderr
    assert json.loads(logged.stdout)["personal_vault"]
    vaults = json.loads(service.aileron("vault", "list", "--json").stdout)
    assert [(v["name"], v["type"], v["my_role"]) for v in vaults] == [("Personal", "personal", "owner")]


def test_signups_over_the_rate_get_one_line_with_the_wait(tmp_path: Path) -> None:
    from tests.service import running_service

    (tmp_path / "svc").mkdir()
    with running_service(tmp_path / "svc", extra_env={"AILERON_THROTTLE_SIGNUP": "1/hour"}) as svc:
        results = []
        for n in range(2):
            env = {**svc.env, "AILERON_HOME": str(tmp_path / f"home{n}")}
            results.append(
                subprocess.run(
                    [str(BIN / "aileron"), "init", "--org", f"Org {n}", "--email", f"o{n}@example.com"],
                    env={**env, "AILERON_SERVER": svc.url},
                    capture_output=True,
                    text=True,
                    timeout=90,
                )
            )
    assert results[0].returncode == 0, results[0].stderr
    refused = results[1]
    assert refused.returncode != 0 and refused.stdout == ""
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("aileron: Request was throttled.") and line.endswith("(429)"), line
    assert not (tmp_path / "home1" / "cli.json").exists()
