"""The canary: a secret added through the CLI, shared, revoked and rotated must appear nowhere in plaintext.

Not in the database (SQLite file or a pg_dump), not in any file under either user's AILERON_HOME, not in the
service's logs, not in any CLI output: raw, base64 (every alignment), URL-encoded or hex.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.service import BIN, Service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def encodings(value: bytes) -> dict[str, bytes]:
    forms = {"raw": value, "hex": value.hex().encode(), "url": urllib.parse.quote(value, safe="").encode()}
    for pad in range(3):  # base64 of the value inside a longer blob depends on its offset modulo 3
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            encoded = enc(b"\0" * pad + value)
            start = {0: 0, 1: 4, 2: 4}[pad]
            forms[f"{name}+{pad}"] = encoded[start : start + 16]
    return forms


def find_canary(value: bytes, blobs: dict[str, bytes]) -> list[str]:
    hits = []
    for form, needle in encodings(value).items():
        for where, data in blobs.items():
            if needle in data:
                hits.append(f"{form} in {where}")
    return hits


def files_under(*roots: Path) -> dict[str, bytes]:
    out = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                out[str(path)] = path.read_bytes()
    return out


def run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([str(BIN / "aileron"), *args], env=env, input=stdin, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode()
    return result


def test_the_canary_appears_nowhere(service: Service, tmp_path: Path) -> None:
    canary = f"ail-canary/{secrets.token_hex(12)}+=".encode()
    outputs: dict[str, bytes] = {}
    alice = service.env
    bob = {**service.env, "AILERON_HOME": str(tmp_path / "bob"), "AILERON_PASSPHRASE": "bob's own passphrase"}

    def keep(label: str, result: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
        outputs[f"{label} stdout"] = result.stdout
        outputs[f"{label} stderr"] = result.stderr
        return result

    keep("init", run(alice, "init", "--org", "Acme", "--email", "alice@example.com", "--server", service.url))
    keep("vault create", run(alice, "vault", "create", "Deploy"))
    keep(
        "secret add",
        run(alice, "secret", "add", "github-token", "--connector", "github", "--vault", "Deploy", stdin=canary + b"\n"),
    )
    invite = json.loads(keep("invite", run(alice, "invite", "bob@example.com", "--json")).stdout)
    keep("join", run({**bob, "AILERON_INVITATION": invite["token"]}, "join", "--server", service.url))
    keep("grant", run(alice, "vault", "grant", "Deploy", "bob@example.com", "--role", "reader"))
    listed = json.loads(keep("bob list", run(bob, "secret", "list", "--json")).stdout)
    assert [s["name"] for s in listed if s["vault"] == "Deploy"] == ["github-token"]
    keep("revoke", run(alice, "vault", "revoke", "Deploy", "bob@example.com"))
    keep("rotate", run(alice, "vault", "rotate", "Deploy", "--json"))
    vaults = json.loads(keep("vault list", run(alice, "vault", "list", "--json")).stdout)
    deploy = next(v for v in vaults if v["name"] == "Deploy")
    assert deploy["key_version"] == 3 and deploy["rotation_pending"] is None
    assert [m["role"] for m in deploy["members"]] == ["owner"]

    # The service is stopped so that every log and database page is on disk.
    os.killpg(service.process.pid, 2)
    assert service.process.wait(timeout=30) == 0

    blobs = files_under(service.home, tmp_path / "bob") | {"service log": service.log.read_bytes()} | outputs
    if "DATABASE_URL" in service.env:
        dump = subprocess.run(
            ["pg_dump", "--data-only", service.env["DATABASE_URL"]], capture_output=True, timeout=120, check=True
        )
        blobs["pg_dump"] = dump.stdout
        assert b"COPY public.vaults_storedfile" in dump.stdout  # the dump really holds the store
    else:
        assert any(p.endswith(".enc") for p in blobs), "the file store holds no ciphertext: the test proves nothing"
    assert sum(len(b) for b in blobs.values()) > 10_000
    assert find_canary(canary, blobs) == []
    # and the same search does find a value that is there, so it can fail:
    assert find_canary(b"alice@example.com", blobs)
