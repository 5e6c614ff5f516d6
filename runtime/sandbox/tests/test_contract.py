"""The runtime contract: what a sandbox's environment and files hold, and how the session CA joins the image's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.package import Connector
from connectors.registry import installed, manifest
from runtime.sandbox import contract as c

CA = b"-----BEGIN CERTIFICATE-----\nMIIBsession\n-----END CERTIFICATE-----\n"
TOKEN = "ail_ses_abc123_XYZ-def"


@pytest.fixture
def connectors(tmp_path: Path) -> list[Connector]:
    return installed(tmp_path)  # the built-in connectors


def make(connectors: list[Connector], **overrides: object) -> tuple[dict[str, str], dict[str, bytes]]:
    arguments: dict[str, object] = {
        "token": TOKEN,
        "session_id": "ses-1",
        "session_ca_pem": CA,
        "manifest_json": json.dumps(manifest(connectors)).encode(),
        "hint": "Aileron connects you to github.",
        "connectors": connectors,
        "proxy_port_inside": 3128,
        "sandbox": "docker",
    }
    arguments.update(overrides)
    return c.contract(**arguments)  # type: ignore[arg-type]


def test_every_proxy_variable_points_at_the_sandbox_loopback_with_the_session_token(
    connectors: list[Connector],
) -> None:
    env, _ = make(connectors, proxy_port_inside=4321)
    expected = f"http://aileron:{TOKEN}@127.0.0.1:4321"
    assert [env[k] for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")] == [expected] * 4
    assert env["NO_PROXY"] == env["no_proxy"] == ""  # nothing bypasses the proxy, not even localhost
    assert env["AILERON_TOKEN"] == TOKEN and env["AILERON_SESSION_ID"] == "ses-1"
    assert env["AILERON_SANDBOX"] == "docker"


def test_a_token_with_reserved_characters_is_quoted_in_the_proxy_url(connectors: list[Connector]) -> None:
    env, _ = make(connectors, token="a@b:c/d")
    assert env["HTTPS_PROXY"] == "http://aileron:a%40b%3Ac%2Fd@127.0.0.1:3128"


def test_every_tls_stack_is_pointed_at_the_bundle_that_holds_the_session_ca(connectors: list[Connector]) -> None:
    env, files = make(connectors)
    assert {env[name] for name in c.CA_FILE_ENV} == {c.CA_BUNDLE}
    assert files[c.CA_BUNDLE] == files[c.SESSION_CA] == files[c.LOCAL_CA] == CA


def test_the_discovery_files_are_the_manifest_and_the_hint(connectors: list[Connector]) -> None:
    env, files = make(connectors)
    actions = json.loads(files["/etc/aileron/actions.json"])
    assert "github.create-issue" in {a["id"] for a in actions["actions"]}
    assert files["/etc/aileron/hint.txt"] == b"Aileron connects you to github.\n"
    assert env["AILERON_ACTIONS"] == "/etc/aileron/actions.json"


def test_sdks_and_gh_get_placeholders_and_no_credential(connectors: list[Connector]) -> None:
    env, files = make(connectors)
    github = next(x for x in connectors if x.name == "github")
    assert env["GH_TOKEN"] == env["GITHUB_TOKEN"] == github.auth.placeholder
    assert env["OPENAI_API_KEY"] == next(x for x in connectors if x.name == "openai").auth.placeholder
    assert env["ANTHROPIC_API_KEY"].startswith("sk-ant-aileron-placeholder")
    hosts = files[f"{env['GH_CONFIG_DIR']}/hosts.yml"].decode()
    assert "github.com:" in hosts and f"oauth_token: {github.auth.placeholder}" in hosts
    assert "git_protocol: https" in hosts


def test_only_installed_connectors_get_placeholders(connectors: list[Connector]) -> None:
    env, files = make([x for x in connectors if x.name == "openai"])
    assert "OPENAI_API_KEY" in env and "GH_TOKEN" not in env
    assert not any(path.endswith("hosts.yml") for path in files)


def test_a_session_ca_that_is_not_a_certificate_is_refused(connectors: list[Connector]) -> None:
    with pytest.raises(ValueError, match="not a PEM certificate"):
        make(connectors, session_ca_pem=b"garbage")


def test_the_session_ca_joins_the_images_own_bundle_and_replaces_it() -> None:
    image = {"/etc/ssl/certs/ca-certificates.crt": b"PUBLIC ROOTS"}
    merged = c.with_system_trust({c.CA_BUNDLE: CA, "/x": b"y"}, image.get)
    assert merged[c.CA_BUNDLE] == b"PUBLIC ROOTS\n" + CA
    assert merged["/etc/ssl/certs/ca-certificates.crt"] == merged[c.CA_BUNDLE]
    assert "/etc/pki/tls/certs/ca-bundle.crt" not in merged  # only bundles the image has are replaced
    assert merged["/x"] == b"y"


def test_an_image_without_a_trust_store_trusts_the_session_ca_alone() -> None:
    merged = c.with_system_trust({c.CA_BUNDLE: CA}, lambda path: None)
    assert merged == {c.CA_BUNDLE: CA}


def test_files_without_the_contracts_bundle_are_left_alone() -> None:
    files = {"/etc/other": b"x"}
    assert c.with_system_trust(files, lambda path: b"ROOTS") is files


def test_built_in_connectors_add_no_package_and_no_command(connectors: list[Connector]) -> None:
    env, files = make(connectors)
    assert "AILERON_CONNECTOR_DIR" not in env
    assert [p for p in files if p.startswith((c.CONNECTOR_DIR, c.BIN))] == []


def test_a_connector_the_user_installed_comes_with_its_package_and_a_command(tmp_path: Path) -> None:
    from connectors.registry import BUILTIN, install

    install(BUILTIN / "slack", tmp_path)  # a copy under AILERON_HOME/connectors: no longer built in
    for stray in (".env", "notes.txt"):  # what else the folder holds is the user's, not the package's
        (tmp_path / "connectors" / "slack" / stray).write_text("SLACK_TOKEN=xoxb-real")
    found = installed(tmp_path)
    env, files = make(found)
    assert env["AILERON_CONNECTOR_DIR"] == c.CONNECTOR_DIR
    package = {p for p in files if p.startswith(f"{c.CONNECTOR_DIR}/")}
    assert package == {f"{c.CONNECTOR_DIR}/slack/{p.name}" for p in (BUILTIN / "slack").iterdir() if p.is_file()}
    assert not any(b"xoxb-real" in content for content in files.values())
    assert files[f"{c.CONNECTOR_DIR}/slack/connector.toml"] == (BUILTIN / "slack" / "connector.toml").read_bytes()
    command = files[f"{c.BIN}/slack"].decode()
    assert command.startswith("#!/bin/sh\n") and command.endswith('exec aileron connector run slack "$@"\n')
    assert (c.file_mode(f"{c.BIN}/slack"), c.file_mode(c.MANIFEST)) == (0o755, 0o644)


def test_the_agents_path_keeps_the_images_and_ends_with_the_shims_and_the_toolbox() -> None:
    from runtime.sandbox.toolbox import DEFAULT_PATH, TOOLBOX_BIN, path_with_toolbox

    tail = f"{c.BIN}:{TOOLBOX_BIN}"
    assert path_with_toolbox(["LANG=C", "PATH=/opt/node/bin:/usr/bin"], {}) == f"/opt/node/bin:/usr/bin:{tail}"
    assert path_with_toolbox(None, {}) == f"{DEFAULT_PATH}:{tail}"
    assert path_with_toolbox(["PATH=/x"], {"PATH": f"{TOOLBOX_BIN}:/y:"}) == f"/y:{tail}"


def test_ssh_in_the_sandbox_leaves_through_the_proxy(connectors: list[Connector]) -> None:
    """OpenSSH reads ssh_config.d: `ssh git@host` (and git over ssh) goes through `aileron tcp`, which the proxy
    allows only under the organization's host:port rules (tests/test_proxy_tcp.py runs the real ssh)."""
    _, files = make(connectors)
    config = files["/etc/ssh/ssh_config.d/aileron.conf"].decode()
    assert "Host *\n    ProxyCommand aileron tcp %h:%p\n" in config
    assert c.file_mode(c.SSH_CONFIG) == 0o644
