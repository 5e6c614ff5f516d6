"""Shims end to end against a local HTTPS upstream: what the upstream receives is what the spec says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from connectors.identify import Catalog
from connectors.registry import installed
from tests.fake_upstream import Received, fake_upstream

BIN = Path(sys.executable).parent


def shim(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / name), *args], env=env, capture_output=True, text=True, timeout=60)


def identify(received: Received, host: str) -> list[tuple[str, dict[str, object]]]:
    path, _, query = received.path.partition("?")
    found = Catalog(installed(Path(os.environ["AILERON_HOME"]))).identify(
        host=host, method=received.method, path=path, query=query, headers=received.headers, body=received.body
    )
    return [(f.action, f.args) for f in found]


def test_shims_send_what_the_spec_describes(tmp_path: Path) -> None:
    with fake_upstream(tmp_path) as upstream:
        env = {
            **os.environ,
            "SSL_CERT_FILE": str(upstream.ca_file),
            "AILERON_UPSTREAM_GITHUB": upstream.url,
            "AILERON_UPSTREAM_STRIPE": upstream.url,
            "AILERON_UPSTREAM_LINEAR": upstream.url,
        }
        env.pop("HTTPS_PROXY", None)

        made = shim(
            "github", "create-issue", "--repo", "octo/app", "--title", "Broken build", "--labels", '["bug"]', env=env
        )
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["ok"] is True
        issue = upstream.received[-1]
        assert (issue.method, issue.path) == ("POST", "/repos/octo/app/issues")
        assert json.loads(issue.body) == {"title": "Broken build", "labels": ["bug"]}
        assert "authorization" not in issue.headers  # shims hold no credentials
        assert identify(issue, "api.github.com") == [
            ("github.create-issue", {"owner": "octo", "repo": "app", "title": "Broken build", "labels": ["bug"]})
        ]

        refund = shim("stripe", "create-refund", "--charge", "ch_1", "--amount", "500", env=env)
        assert refund.returncode == 0, refund.stderr
        sent = upstream.received[-1]
        assert sent.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert sent.body == b"charge=ch_1&amount=500"
        assert identify(sent, "api.stripe.com") == [("stripe.create-refund", {"charge": "ch_1", "amount": "500"})]

        linear = shim("linear", "create-issue", "--input", '{"teamId": "t-1", "title": "From the shim"}', env=env)
        assert linear.returncode == 0, linear.stderr
        graphql = upstream.received[-1]
        assert graphql.path == "/graphql"
        assert identify(graphql, "api.linear.app") == [
            ("linear.create-issue", {"input": {"teamId": "t-1", "title": "From the shim"}})
        ]

        count = len(upstream.received)
        for bad in (
            ["create-issue", "--repo", "octo/app"],
            ["create-issue", "--repo", "octo/app", "--title", "x", "--nope", "1"],
            ["get-issue", "--repo", "o/r", "--issue-number", "seven"],
        ):
            refused = shim("github", *bad, env=env)
            assert refused.returncode == 2 and refused.stderr.startswith("github: ")
            assert len(refused.stderr.strip().splitlines()) == 1
        assert len(upstream.received) == count  # invalid arguments never leave the machine


def test_help_comes_from_the_spec(tmp_path: Path) -> None:
    env = {**os.environ}
    listing = shim("github", "--help", env=env)
    assert "create-issue" in listing.stdout and "deploy" in listing.stdout and "[approval required]" in listing.stdout
    detail = shim("github", "create-issue", "--help", env=env)
    assert "POST https://api.github.com/repos/{owner}/{repo}/issues" in detail.stdout
    assert "--title" in detail.stdout
