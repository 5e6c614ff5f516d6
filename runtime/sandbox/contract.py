"""The runtime contract every sandbox gets at launch, base and BYO images alike: environment and files. Pure.

The agent's HTTPS goes to the proxy on the sandbox's own loopback (the inside relay) with the session token;
its TLS stacks trust the session CA; the discovery files (manifest, hint) sit under /etc/aileron; the LLM SDKs
and `gh` find placeholder keys, so they start without a real credential, which only the proxy holds.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from urllib.parse import quote

from connectors.package import Connector
from connectors.registry import is_builtin, package_files

ETC = "/etc/aileron"
SESSION_CA = f"{ETC}/session-ca.pem"
# The image's own trust plus the session CA; `with_system_trust` builds it, since only the backend can read the
# image. Every TLS stack is pointed at it, and it also replaces the image's system bundle (see SYSTEM_CA_BUNDLES).
CA_BUNDLE = f"{ETC}/ca-bundle.pem"
# Where `update-ca-certificates` looks, so an image that rebuilds its trust store keeps the session CA.
LOCAL_CA = "/usr/local/share/ca-certificates/aileron-session.crt"
MANIFEST = f"{ETC}/actions.json"
HINT = f"{ETC}/hint.txt"
# gh reads its hosts.yml from GH_CONFIG_DIR: one read-only place for any user and home, root included.
GH_CONFIG_DIR = f"{ETC}/gh"
# Connectors that are not built in (imported, installed from a folder or a distribution): their packages, read
# by the shims through AILERON_CONNECTOR_DIR, and a command of each one's name in BIN, which the backends put
# on PATH and write executable (every other file is written 0644).
CONNECTOR_DIR = f"{ETC}/connectors"
BIN = f"{ETC}/bin"
# OpenSSH reads /etc/ssh/ssh_config.d/*.conf (Debian's and Ubuntu's ssh_config include them): ssh, and git over
# ssh, leave through the proxy, which relays only what the organization's `host:port` egress rules allow.
SSH_CONFIG = "/etc/ssh/ssh_config.d/aileron.conf"
SSH_CONFIG_TEXT = (
    b"# Written by `aileron launch`: SSH leaves this sandbox only through the Aileron proxy, which allows the\n"
    b"# organization's host:port egress rules (e.g. github.com:22) and audits each connection.\n"
    b"Host *\n"
    b"    ProxyCommand aileron tcp %h:%p\n"
)
# Debian/Ubuntu/Alpine, then Fedora/RHEL: the bundles OpenSSL, curl and Go read when nothing says otherwise.
SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
CA_FILE_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")
# Which environment variable each connector's SDK or CLI reads its key from: it gets the connector's placeholder.
PLACEHOLDER_ENV = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "github": ("GH_TOKEN", "GITHUB_TOKEN"),
    "stripe": ("STRIPE_API_KEY",),
    "slack": ("SLACK_TOKEN",),
    "linear": ("LINEAR_API_KEY",),
}


def proxy_url(token: str, port: int) -> str:
    return f"http://aileron:{quote(token, safe='')}@127.0.0.1:{port}"


def gh_hosts(placeholder: str) -> bytes:
    """gh's hosts.yml with the placeholder: gh believes it is logged in, and the proxy swaps in the real token.

    In the multi-account layout (gh 2.40+), which older gh reads too (`user`, `oauth_token` at the host level).
    """
    return (
        "github.com:\n"
        "    users:\n"
        "        aileron-agent:\n"
        f"            oauth_token: {placeholder}\n"
        "    git_protocol: https\n"
        "    user: aileron-agent\n"
        f"    oauth_token: {placeholder}\n"
    ).encode()


# `version: "1"` marks the configuration as already migrated: gh 2.40+ would otherwise rewrite hosts.yml at start,
# which fails on the read-only mount.
GH_CONFIG = b'version: "1"\ngit_protocol: https\nprompt: disabled\n'


def contract(
    *,
    token: str,
    session_id: str,
    session_ca_pem: bytes,
    manifest_json: bytes,
    hint: str,
    connectors: list[Connector],
    proxy_port_inside: int,
    sandbox: str,
) -> tuple[dict[str, str], dict[str, bytes]]:
    """The sandbox's environment and files (absolute paths inside it, written read-only by the backend)."""
    if b"BEGIN CERTIFICATE" not in session_ca_pem:
        raise ValueError("the session CA is not a PEM certificate")
    url = proxy_url(token, proxy_port_inside)
    env = {
        "HTTPS_PROXY": url,
        "https_proxy": url,
        "HTTP_PROXY": url,
        "http_proxy": url,
        "NO_PROXY": "",
        "no_proxy": "",
        "AILERON_TOKEN": token,
        "AILERON_SESSION_ID": session_id,
        "AILERON_SANDBOX": sandbox,
        "AILERON_ACTIONS": MANIFEST,
        "AILERON_HINT_FILE": HINT,
        "GH_CONFIG_DIR": GH_CONFIG_DIR,
        "GH_NO_UPDATE_NOTIFIER": "1",
    }
    for name in CA_FILE_ENV:
        env[name] = CA_BUNDLE
    for connector in connectors:
        for name in PLACEHOLDER_ENV.get(connector.name, ()):
            env[name] = connector.auth.placeholder
    pem = session_ca_pem if session_ca_pem.endswith(b"\n") else session_ca_pem + b"\n"
    files = {
        SESSION_CA: pem,
        LOCAL_CA: pem,
        CA_BUNDLE: pem,
        MANIFEST: manifest_json,
        HINT: hint.encode() + (b"" if hint.endswith("\n") else b"\n"),
        SSH_CONFIG: SSH_CONFIG_TEXT,
    }
    github = next((c for c in connectors if c.name == "github"), None)
    if github is not None:
        files[f"{GH_CONFIG_DIR}/hosts.yml"] = gh_hosts(github.auth.placeholder)
        files[f"{GH_CONFIG_DIR}/config.yml"] = GH_CONFIG
    added = connector_files(connectors)
    if added:
        files.update(added)
        env["AILERON_CONNECTOR_DIR"] = CONNECTOR_DIR
    return env, files


def connector_files(connectors: list[Connector], *, aileron: str = "aileron") -> dict[str, bytes]:
    """The packages of the connectors a sandbox does not have built in, and a command for each: its shim, which
    runs `aileron` (a name on PATH, or an absolute path for a host's PATH that may not have it)."""
    files: dict[str, bytes] = {}
    for connector in connectors:
        if connector.folder is None or is_builtin(connector):
            continue
        for path in package_files(connector.folder):
            files[f"{CONNECTOR_DIR}/{connector.name}/{path.name}"] = path.read_bytes()
        files[f"{BIN}/{connector.name}"] = (
            f"#!/bin/sh\n# The {connector.name} connector's shim (written by `aileron launch`).\n"
            f'exec {shlex.quote(aileron)} connector run {connector.name} "$@"\n'
        ).encode()
    return files


def file_mode(inside: str) -> int:
    """How a backend writes a contract file: executable in BIN, else readable by anyone (nothing is secret)."""
    return 0o755 if inside.startswith(f"{BIN}/") else 0o644


def with_system_trust(files: dict[str, bytes], read: Callable[[str], bytes | None]) -> dict[str, bytes]:
    """The files with the session CA added to the image's trust store, given a reader of the image's files.

    CA_BUNDLE becomes the image's system bundle followed by the session CA, and replaces each system bundle the
    image has, so tools that ignore SSL_CERT_FILE (openssl, a static Go binary, ...) trust the session too.
    Without a CA_BUNDLE in `files` (not the contract's), the files are returned unchanged.
    """
    session = files.get(CA_BUNDLE)
    if session is None:
        return files
    found = {path: content for path in SYSTEM_CA_BUNDLES if (content := read(path))}  # empty: a link, say
    system = next(iter(found.values()), b"")
    if system and not system.endswith(b"\n"):
        system += b"\n"
    bundle = system + session if session not in system else system
    return {**files, CA_BUNDLE: bundle, **dict.fromkeys(found, bundle)}
