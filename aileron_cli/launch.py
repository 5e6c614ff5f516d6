"""`aileron launch --sandbox none -- CMD ARGS...`: run an agent on this host with the runtime contract.

The unsandboxed developer mode. The command gets a session of its own (token, session CA, the user's key
unlocked in the data plane) and an environment that sends its HTTPS through the proxy: HTTPS_PROXY with the
session token, the session CA for every common TLS stack, and placeholder keys for the LLM SDKs and `gh`, so
they start without a real credential. Nothing stops the command from ignoring HTTPS_PROXY or reading this
user's files: that is what the sandboxes (docker, netns) add around the same contract. When the command exits,
the session ends: its keys are wiped in the data plane and its token is revoked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from aileron_cli.client import ApiClient, CliError
from aileron_cli.ptyrelay import Decide, Held, PtyRelay
from aileron_cli.sessions import KeyChannel, SessionOpened
from connectors.package import Connector
from runtime.sandbox.contract import BIN, CA_FILE_ENV, PLACEHOLDER_ENV, connector_files
from runtime.sandbox.local_backend import LocalBackend
from runtime.sandbox.spec import Backend, SandboxSpec

# Credentials a user may have exported for their own use: an agent launched by Aileron must not inherit them.
_SECRET_ENV = (
    "AILERON_PASSPHRASE",
    "AILERON_LOGIN_TOKEN",
    "AILERON_INVITATION",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GH_TOKEN",
    "GITHUB_TOKEN",
    "STRIPE_API_KEY",
    "SLACK_TOKEN",
    "LINEAR_API_KEY",
)


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Proxy:
        raw = text if "://" in text else f"http://{text}"
        parts = urlsplit(raw)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise CliError(f"--proxy must be HOST:PORT or http://HOST:PORT, not {text!r}", exit_code=2)
        try:
            port = parts.port or 8480
        except ValueError:
            raise CliError(f"--proxy has a bad port: {text!r}", exit_code=2) from None
        return cls(parts.hostname, port)

    def url(self, token: str | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://aileron:{token}@{host}:{self.port}" if token else f"http://{host}:{self.port}"


def fetch_session_ca(proxy: Proxy, token: str) -> bytes:
    """The session's CA certificate, from the data plane itself (it never leaves there with its key)."""
    try:
        with httpx.Client(proxy=proxy.url(token), timeout=10, trust_env=False) as client:
            response = client.get("http://aileron.proxy/ca.pem")
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the data plane's proxy at {proxy.url()}: {exc.__class__.__name__}") from None
    if response.status_code != 200 or b"BEGIN CERTIFICATE" not in response.content:
        raise CliError(f"the proxy at {proxy.url()} did not hand out the session CA ({response.status_code})")
    return response.content


def agent_environment(
    base: dict[str, str], *, proxy: Proxy, opened: SessionOpened, ca_file: Path, connectors: list[Connector]
) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in _SECRET_ENV and not k.lower().endswith("_proxy")}
    proxy_url = proxy.url(opened.token)
    env.update(
        HTTPS_PROXY=proxy_url,
        https_proxy=proxy_url,
        HTTP_PROXY=proxy_url,
        http_proxy=proxy_url,
        NO_PROXY="",
        no_proxy="",
        AILERON_TOKEN=opened.token,
        AILERON_SESSION_ID=opened.session_id,
        AILERON_SANDBOX="none",
    )
    for name in CA_FILE_ENV:
        env[name] = str(ca_file)
    for connector in connectors:
        for name in PLACEHOLDER_ENV.get(connector.name, ()):
            env[name] = connector.auth.placeholder
    return env


def not_found(command: str) -> str:
    """The one line for a command this host lacks: for a known agent, how to install it."""
    from runtime.sandbox.agents import BY_COMMAND, missing_line

    if command in BY_COMMAND:  # the CLI prints it after "aileron: "
        return missing_line(command, tier="host").removeprefix("aileron: ")
    return f"{command}: command not found"


def run_agent(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
    """Run the agent in the foreground of this terminal; Ctrl-C reaches it, and its exit code is ours."""
    executable = shutil.which(argv[0], path=env.get("PATH"))
    if executable is None:
        raise CliError(not_found(argv[0]), exit_code=127)
    process = subprocess.Popen([executable, *argv[1:]], env=env, cwd=cwd)  # noqa: S603 - the user's own command
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C goes to the agent itself
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def _connector_commands(folder: Path, connectors: list[Connector]) -> Path | None:
    """A command of its own name for each connector that is not built in, as sandboxes have (the built-in shims
    are installed commands); each runs this very `aileron`, which need not be on PATH."""
    aileron = shutil.which("aileron", path=str(Path(sys.executable).parent)) or "aileron"
    scripts = {
        inside: content
        for inside, content in connector_files(connectors, aileron=aileron).items()
        if inside.startswith(f"{BIN}/")
    }
    if not scripts:
        return None
    folder.mkdir(mode=0o700)
    for inside, content in scripts.items():
        path = folder / Path(inside).name
        path.write_bytes(content)
        path.chmod(0o755)
    return folder


def launch_unsandboxed(
    *,
    argv: list[str],
    proxy: Proxy,
    open_session: Callable[[], SessionOpened],
    end_session: Callable[[SessionOpened], None],
    connectors: list[Connector],
    warn: Callable[[str], None],
    decide: Decide | None = None,
    follow: Callable[[Callable[[dict[str, Any]], None]], None] | None = None,
    record: Callable[[SessionOpened, dict[str, Any]], Callable[[], None]] | None = None,
    cannot_decide: str = "",
) -> int:
    opened = open_session()
    folder = Path(tempfile.mkdtemp(prefix="aileron-session-"))
    forget = record(opened, {"sandbox": "none", "image": "", "tier": "none"}) if record else (lambda: None)
    try:
        os.chmod(folder, 0o700)
        ca_file = folder / "session-ca.pem"
        ca_file.write_bytes(fetch_session_ca(proxy, opened.token))
        env = agent_environment(dict(os.environ), proxy=proxy, opened=opened, ca_file=ca_file, connectors=connectors)
        commands = _connector_commands(folder / "bin", connectors)
        if commands is not None:
            env["PATH"] = f"{env.get('PATH', os.defpath)}:{commands}"
        warn(
            f"aileron: UNSANDBOXED developer mode (--sandbox none): {argv[0]} runs on this host with your rights. "
            "Only HTTPS that honours HTTPS_PROXY is mediated, approved and audited."
        )
        warn(f"aileron: session {opened.session_id}, proxy {proxy.url()}")
        if decide is None or not sys.stdin.isatty():
            return run_agent(argv, env)  # no terminal to own: the agent inherits ours, approvals are decided elsewhere
        executable = shutil.which(argv[0], path=env.get("PATH"))
        if executable is None:
            raise CliError(not_found(argv[0]), exit_code=127)
        rows, columns = terminal_size()
        spec = SandboxSpec(
            image="", argv=[executable, *argv[1:]], env=env, workdir=Path.cwd(), rows=rows, columns=columns
        )
        return run_on_pty(
            LocalBackend(),
            spec,
            decide=decide,
            follow=follow,
            session_id=opened.session_id,
            cannot_decide=cannot_decide,
        )
    finally:
        forget()
        shutil.rmtree(folder, ignore_errors=True)
        end_session(opened)


def end_session(api: ApiClient, channel: KeyChannel, opened: SessionOpened) -> None:
    """Wipe the session's keys in the data plane and revoke its token; both are tried, whatever fails."""
    errors = []
    try:
        channel.send({"op": "close", "session_id": opened.session_id}, timeout=10)
    except (OSError, ValueError, CliError) as exc:
        errors.append(f"the key channel: {exc}")
    try:
        api.delete(f"/api/v1/orgs/{channel.organization_id}/session-tokens/{opened.session_id}/")
    except CliError as exc:
        errors.append(f"revoking the token: {exc}")
    if errors:
        raise CliError("the session did not end cleanly: " + "; ".join(errors))


# --- the agent on a PTY this process owns, with approvals asked in the launching terminal ---------------------


def held_from(approval: dict[str, Any]) -> Held:
    args = approval.get("args")
    return Held(
        id=str(approval.get("id", "")),
        action=str(approval.get("action", "")),
        args=args if isinstance(args, dict) else {},
        agent=str(approval.get("agent", "")),
        four_eyes=bool(approval.get("four_eyes")),
    )


def approvals_feed(
    relay: PtyRelay, *, session_id: str, follow: Callable[[Callable[[dict[str, Any]], None]], None]
) -> threading.Thread:
    """Follow the approvals feed in a thread; this session's requests are shown by the relay."""

    def handle(message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "snapshot":
            for approval in message.get("approvals") or []:
                if isinstance(approval, dict) and approval.get("session_id") == session_id:
                    relay.notify("created", held_from(approval))
            return
        approval = message.get("approval")
        if isinstance(approval, dict) and approval.get("session_id") == session_id and isinstance(event, str):
            if event == "created" or approval.get("state") != "pending":
                relay.notify(event, held_from(approval))

    def run() -> None:
        try:
            follow(handle)
        except Exception:  # noqa: BLE001, S110 - no feed: approvals can still be decided on the web or the CLI
            pass

    thread = threading.Thread(target=run, name="aileron-approvals-feed", daemon=True)
    thread.start()
    return thread


def run_on_pty(
    backend: Backend,
    spec: SandboxSpec,
    *,
    decide: Decide,
    follow: Callable[[Callable[[dict[str, Any]], None]], None] | None,
    session_id: str,
    cannot_decide: str = "",
) -> int:
    """Start the agent in `backend`, relay it to this terminal, ask this session's approvals here (or, where the
    person here may not decide them, `cannot_decide` says why and who will)."""
    running = backend.start(spec)
    try:
        relay = PtyRelay(running, decide=decide, cannot_decide=cannot_decide)
        if follow is not None:
            approvals_feed(relay, session_id=session_id, follow=follow)
        return relay.run()
    finally:
        running.stop()


def terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return 24, 80
    return size.lines, size.columns


# --- the sandboxes: docker and netns ------------------------------------------------------------------------

PROXY_PORT_INSIDE = 3128  # the agent's HTTPS_PROXY, on the sandbox's own loopback


MCP_CONFIG = "/etc/aileron/mcp.json"  # the project's MCP servers (devcontainer customizations.aileron.mcps)


def agent_argv(command: list[str], *, hint_file: str, mcp_config: str | None = None, tier: str = "base") -> list[str]:
    """The agent command as run in the sandbox. Known agents (claude, codex, gemini) get the system-prompt hint,
    the project's MCP servers and their unattended start their own way (runtime.sandbox.agents), or one line
    saying how to add them to the image; any other command runs as given and finds the hint and the MCP servers
    at $AILERON_HINT_FILE and $AILERON_MCP_CONFIG."""
    from runtime.sandbox.agents import launch_argv

    known = launch_argv(command, hint_file=hint_file, mcp_config=mcp_config, tier=tier)
    return known if known is not None else list(command)


def agent_env(command: list[str]) -> dict[str, str]:
    """A known agent's own settings for an offline, unattended start (none for any other command)."""
    from runtime.sandbox.agents import AGENT_ENV

    return dict(AGENT_ENV.get(command[0], {})) if command else {}


def mcp_file(servers: list[dict[str, Any]]) -> bytes:
    """The MCP servers in the shape Claude Code's --mcp-config (and most MCP clients) read."""
    config = {
        "mcpServers": {
            s["name"]: {"command": s["command"], "args": list(s.get("args", [])), "env": dict(s.get("env", {}))}
            for s in servers
        }
    }
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class SandboxPlan:
    """What `aileron launch` decided before opening a session: nothing here holds a secret."""

    backend: str
    image: str
    tier: str
    mediation: str
    approval_surface: str
    project: Path
    mcps: tuple[dict[str, Any], ...] = ()
    runtime: str = "runc"  # docker: "gvisor" runs it under runsc
    aileron_project: str = ""  # the devcontainer's customizations.aileron.project (a slug), "" for none


def launch_sandboxed(
    *,
    plan: SandboxPlan,
    backend: Backend,
    argv: list[str],
    proxy: Proxy,
    open_session: Callable[[], SessionOpened],
    end_session: Callable[[SessionOpened], None],
    connectors: list[Connector],
    manifest_json: bytes,
    hint: str,
    shell_policy: dict[str, Any] | None,
    warn: Callable[[str], None],
    decide: Decide,
    follow: Callable[[Callable[[dict[str, Any]], None]], None] | None,
    record: Callable[[SessionOpened, dict[str, Any]], Callable[[], None]],
    cannot_decide: str = "",
) -> int:
    """The startup sequence after the user is known: session (attested, key delivered), relay to the proxy,
    the runtime contract, the sandbox on a PTY this process owns; then the session ends and its keys are wiped."""
    from runtime.sandbox import contract
    from runtime.sandbox.backends import SandboxError
    from runtime.sandbox.relay import HostRelay
    from runtime.sandbox.shell import shell_argv, shell_files

    opened = open_session()
    folder = Path(tempfile.mkdtemp(prefix="aileron-sandbox-"))
    relay: HostRelay | None = None
    forget: Callable[[], None] = lambda: None  # noqa: E731
    try:
        os.chmod(folder, 0o700)
        relay = HostRelay(folder / "proxy.sock", proxy.host, proxy.port)
        relay.start()
        ca = fetch_session_ca(proxy, opened.token)
        env, files = contract.contract(
            token=opened.token,
            session_id=opened.session_id,
            session_ca_pem=ca,
            manifest_json=manifest_json,
            hint=hint,
            connectors=connectors,
            proxy_port_inside=PROXY_PORT_INSIDE,
            sandbox=plan.backend,
        )
        env["TERM"] = os.environ.get("TERM", "xterm-256color")
        if plan.mcps:
            files[MCP_CONFIG] = mcp_file(list(plan.mcps))
            env["AILERON_MCP_CONFIG"] = MCP_CONFIG
        env.update(agent_env(argv))
        # netns runs this host's system: a missing agent is installed here, not in an image
        tier = plan.tier if plan.backend == "docker" else "host"
        command = agent_argv(argv, hint_file=contract.HINT, mcp_config=MCP_CONFIG if plan.mcps else None, tier=tier)
        if plan.mediation != "off":
            files.update(shell_files(shell_policy, session_id=opened.session_id))
            command = shell_argv(command)
        rows, columns = terminal_size()
        spec = SandboxSpec(
            image=plan.image,
            argv=command,
            env=env,
            files=files,
            workdir=plan.project,
            proxy_socket=relay.socket_path,
            proxy_port_inside=PROXY_PORT_INSIDE,
            rows=rows,
            columns=columns,
            name=opened.session_id[:12],
            runtime=plan.runtime,
        )
        under = " under gVisor" if plan.runtime == "gvisor" else ""
        warn(f"aileron: session {opened.session_id} in a {plan.backend} sandbox{under} ({plan.image or 'host root'})")
        forget = record(opened, {"sandbox": plan.backend, "image": plan.image, "tier": plan.tier})
        try:
            running = backend.start(spec)
        except SandboxError as exc:
            raise CliError(str(exc)) from None
        for note in getattr(running, "notes", []):
            warn(f"aileron: {note}")
        try:
            relay_ = PtyRelay(running, decide=decide, cannot_decide=cannot_decide)
            if follow is not None and plan.approval_surface in ("terminal", "both"):
                approvals_feed(relay_, session_id=opened.session_id, follow=follow)
            return relay_.run()
        finally:
            running.stop()
    finally:
        forget()
        if relay is not None:
            relay.stop()
        shutil.rmtree(folder, ignore_errors=True)
        end_session(opened)
