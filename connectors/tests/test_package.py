"""Connector packages, the registry, the manifest, and the CLI that shows them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.package import ConnectorError, load
from connectors.registry import BUILTIN, import_openapi, install, installed, manifest, router
from connectors.tests.test_matcher import GITHUB_SPEC, needs_github_spec

AILERON = Path(sys.executable).parent / "aileron"


def test_the_builtin_github_connector_declares_its_curated_actions() -> None:
    github = load(BUILTIN / "github")
    ids = {a.id: a for a in github.actions}
    assert {
        "github.create-issue",
        "github.create-comment",
        "github.create-pull",
        "github.merge-pull",
        "github.deploy",
    } <= set(ids)
    assert ids["github.deploy"].approval == "always" and ids["github.merge-pull"].approval == "always"
    assert ids["github.get-issue"].approval == "never"
    schema = ids["github.create-issue"].arguments
    assert schema["body"] == "application/json" and {"owner", "repo", "title"} <= set(schema["properties"])
    assert {"owner", "repo"} <= set(schema["required"])


def test_installing_a_connector_adds_its_actions_to_the_manifest(tmp_path: Path) -> None:
    before = {a["id"] for a in manifest(installed(tmp_path))["actions"]}
    package = tmp_path / "pkg"
    shutil.copytree(BUILTIN / "github", package)
    meta = (
        (package / "connector.toml")
        .read_text()
        .replace('name = "github"', 'name = "ghe"')
        .replace('["api.github.com"]', '["github.example.com"]')
    )
    (package / "connector.toml").write_text(meta)
    install(package, tmp_path)
    after = manifest(installed(tmp_path))
    added = {a["id"] for a in after["actions"]} - before
    assert "ghe.deploy" in added and len(added) == 12
    assert {
        "name": "ghe",
        "description": next(c["description"] for c in after["connectors"] if c["name"] == "ghe"),
        "hosts": ["github.example.com"],
        "shim": "ghe",
    } in after["connectors"]
    found = router(installed(tmp_path)).match(
        host="github.example.com", method="POST", path="/repos/o/r/actions/workflows/deploy.yml/dispatches"
    )
    assert found is not None and found.action == "ghe.deploy"


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t: t.replace('scheme = "bearer"', 'scheme = "magic"'), "auth.scheme"),
        (lambda t: t.replace('scheme = "bearer"', 'scheme = "bearer"\nstrip_query = "key"'), "auth.strip_query"),
        (lambda t: t.replace('operation = "pulls/merge"', 'operation = "pulls/nope"'), "pulls/nope"),
        (lambda t: t.replace('name = "github"', 'name = "Git Hub"'), "`name`"),
        (lambda t: t.replace('id = "deploy"', 'id = "merge-pull"'), "duplicate id"),
        (lambda t: t + "\n[broken", "connector.toml"),
    ],
)
def test_an_invalid_package_is_refused_with_the_file_and_key(tmp_path: Path, change: object, message: str) -> None:
    assert callable(change)
    package = tmp_path / "pkg"
    shutil.copytree(BUILTIN / "github", package)
    (package / "connector.toml").write_text(change((package / "connector.toml").read_text()))
    with pytest.raises(ConnectorError, match=message):
        install(package, tmp_path / "home")
    assert not (tmp_path / "home" / "connectors" / "github").exists()


@needs_github_spec
def test_importing_the_whole_github_description_lights_up_every_operation(tmp_path: Path) -> None:
    made = import_openapi(GITHUB_SPEC, home=tmp_path, name="ghfull", hosts=["ghfull.example.com"], auth="bearer")
    assert len(made.actions) > 1000
    by_method = {a.method: a.approval for a in made.actions}
    assert by_method["GET"] == "never" and by_method["POST"] == "always" and by_method["DELETE"] == "always"
    ids = {a.id for a in made.actions}
    assert "ghfull.issues-create" in ids and "ghfull.repos-compare-commits-with-basehead" in ids


def test_the_cli_matches_and_explains(tmp_path: Path) -> None:
    env = {**os.environ, "AILERON_HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(AILERON), *args], env=env, capture_output=True, text=True, timeout=60)

    matched = run("actions", "match", "PUT", "https://api.github.com/repos/octo/app/pulls/7/merge", "--json")
    assert matched.returncode == 0, matched.stderr
    assert json.loads(matched.stdout) == {
        "matched": True,
        "actions": [{"action": "github.merge-pull", "arguments": {"owner": "octo", "repo": "app", "pull_number": 7}}],
        "path": "/repos/octo/app/pulls/7/merge",
    }
    refund = subprocess.run(
        [
            str(AILERON),
            "actions",
            "match",
            "POST",
            "https://api.stripe.com/v1/refunds",
            "--body",
            "-",
            "--content-type",
            "application/x-www-form-urlencoded",
        ],
        input="charge=ch_1&amount=500&metadata[order]=42",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refund.stdout.strip() == 'stripe.create-refund  {"amount": "500", "charge": "ch_1", "metadata[order]": "42"}'
    linear = subprocess.run(
        [str(AILERON), "actions", "match", "POST", "https://api.linear.app/graphql", "--body", "-", "--json"],
        input=json.dumps(
            {
                "query": "mutation M($t: String!) { x: issueCreate(input: {teamId: $t}) { success } }",
                "variables": {"t": "team-1"},
            }
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(linear.stdout)["actions"] == [{"action": "linear.create-issue", "arguments": {"t": "team-1"}}]
    refused = run("actions", "match", "GET", "https://api.github.com/repos/octo%2F..%2Fx/app")
    assert refused.returncode == 1 and refused.stdout.startswith("refused:")
    unmatched = run("actions", "match", "GET", "https://api.github.com/user/keys")
    assert unmatched.returncode == 1 and unmatched.stdout.startswith("unmatched:")
    written = tmp_path / "actions.json"
    assert run("actions", "manifest", "-o", str(written)).returncode == 0
    assert {a["id"] for a in json.loads(written.read_text())["actions"]} >= {"github.deploy"}


def test_the_hint_is_short_and_names_what_is_installed(tmp_path: Path) -> None:
    env = {**os.environ, "AILERON_HOME": str(tmp_path)}
    hint = subprocess.run([str(AILERON), "actions", "hint"], env=env, capture_output=True, text=True, timeout=60)
    assert hint.returncode == 0
    words = hint.stdout.split()
    assert len(words) < 120  # about 150 tokens at most
    assert "/etc/aileron/actions.json" in hint.stdout and "`github`" in hint.stdout and "stripe" in hint.stdout


def test_approval_can_depend_on_the_arguments(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(BUILTIN / "stripe", package)
    meta = (
        (package / "connector.toml")
        .read_text()
        .replace(
            'id = "create-refund"\noperation = "PostRefunds"\napproval = "always"',
            'id = "create-refund"\noperation = "PostRefunds"\napproval = "conditional"\n'
            'approval_when = [{ argument = "amount", above = 10000 }, { argument = "reason", in = ["fraudulent"] }]',
        )
    )
    (package / "connector.toml").write_text(meta)
    refund = next(a for a in install(package, tmp_path / "home").actions if a.name == "create-refund")
    assert refund.approval == "conditional"
    assert not refund.approval_required({"charge": "ch_1", "amount": "500"})
    assert refund.approval_required({"charge": "ch_1", "amount": "25000"})
    assert refund.approval_required({"charge": "ch_1", "amount": "5", "reason": "fraudulent"})
    assert refund.approval_required({"charge": "ch_1", "amount": "lots"})  # unreadable: ask a human
    assert refund.manifest_entry()["approval_when"][0] == {"argument": "amount", "above": 10000}
    broken = meta.replace('approval = "conditional"', 'approval = "always"')
    (package / "connector.toml").write_text(broken)
    with pytest.raises(ConnectorError, match="approval_when"):
        load(package)


def test_import_follows_refs_and_reads_form_bodies(tmp_path: Path) -> None:
    from connectors.identify import Catalog

    spec = {
        "openapi": "3.0.0",
        "info": {"title": "Payments"},
        "paths": {
            "/v1/charges/{charge}/refund": {
                "parameters": [{"$ref": "#/components/parameters/Charge"}],
                "post": {
                    "operationId": "PostChargesChargeRefund",
                    "requestBody": {
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {"$ref": "#/components/schemas/RefundParams"}
                            }
                        }
                    },
                },
            },
            "/v1/charges/{charge}": {
                "get": {"operationId": "GetChargesCharge", "parameters": [{"$ref": "#/components/parameters/Charge"}]}
            },
        },
        "components": {
            "parameters": {
                "Charge": {
                    "name": "charge",
                    "in": "path",
                    "required": True,
                    "schema": {"$ref": "#/components/schemas/Id"},
                }
            },
            "schemas": {
                "Id": {"type": "string"},
                "RefundParams": {
                    "type": "object",
                    "required": ["amount"],
                    "properties": {"amount": {"type": "integer"}, "metadata": {"$ref": "#/components/schemas/Meta"}},
                },
                "Meta": {"type": "object"},
            },
        },
    }
    spec_file = tmp_path / "payments.json"
    spec_file.write_text(json.dumps(spec))
    made = import_openapi(spec_file, home=tmp_path, name="payments", hosts=["pay.example.com"], auth="basic")
    refund = next(a for a in made.actions if a.name == "post-charges-charge-refund")
    assert refund.approval == "always" and refund.arguments["body"] == "application/x-www-form-urlencoded"
    assert refund.arguments["properties"]["amount"]["type"] == "integer"
    assert set(refund.arguments["required"]) == {"charge", "amount"}
    found = Catalog([made]).identify(
        host="pay.example.com",
        method="POST",
        path="/v1/charges/ch_9/refund",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=b"amount=700&metadata[why]=dup",
    )
    assert [(f.action, f.args) for f in found] == [
        ("payments.post-charges-charge-refund", {"charge": "ch_9", "amount": "700", "metadata[why]": "dup"})
    ]


def test_a_python_distribution_can_ship_a_connector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "acme_connector"
    package.mkdir(parents=True)
    shutil.copytree(BUILTIN / "slack", package / "data")
    meta = (package / "data" / "connector.toml").read_text().replace('name = "slack"', 'name = "acme-chat"')
    (package / "data" / "connector.toml").write_text(meta.replace('["slack.com"]', '["chat.acme.example"]'))
    (package / "__init__.py").write_text("from pathlib import Path\nFOLDER = Path(__file__).parent / 'data'\n")
    dist = tmp_path / "site" / "acme_connector-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-connector\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[aileron.connectors]\nacme-chat = acme_connector:FOLDER\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    names = {c.name for c in installed(tmp_path / "home")}
    assert "acme-chat" in names and "slack" in names
