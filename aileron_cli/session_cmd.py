"""Agent sessions: `aileron session`, `aileron launch` and `aileron tcp`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from aileron_cli import state
from aileron_cli.client import ApiClient, CliError
from aileron_cli.common import (
    CREDENTIAL_HELP,
    DEFAULT_PROXY,
    PROJECT_HELP,
    console,
    emit_json,
    err_console,
    fail_cleanly,
    installed_connectors,
    key_socket,
    logged_in_api,
    org_identity,
    pinned_credentials,
    project_id_of,
    require_login,
    server_proxy,
    warn_line,
)
from aileron_cli.connector_cmd import agent_hint
from aileron_cli.vaultops import read_passphrase


@click.group()
def session() -> None:
    """Agent sessions: a narrow token for the agent, and your unlocked keys held by the credential service."""


@session.command("start")
@click.option("--name", default="agent session", show_default=True, help="A label for the session.")
@click.option("--minutes", type=click.IntRange(1, 1440), default=720, show_default=True, help="Lifetime.")
@click.option("--project", "project_slug", default=None, help=PROJECT_HELP)
@click.option("--credential", "credential_refs", multiple=True, help=CREDENTIAL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def session_start(
    name: str, minutes: int, project_slug: str | None, credential_refs: tuple[str, ...], as_json: bool
) -> None:
    """Start a session: mint its token, check the local data plane's attestation, hand it your sealed master key."""
    from aileron_cli.sessions import KeyChannel, session_open

    login = require_login()
    passphrase = read_passphrase()
    with logged_in_api() as api:
        identity = org_identity(api, login)
        opened = session_open(
            api,
            identity,
            passphrase=passphrase,
            name=name,
            minutes=minutes,
            channel=KeyChannel.choose(api, identity.organization_id, key_socket()),
            project_id=project_id_of(api, identity.organization_id, project_slug),
            pins=pinned_credentials(api, identity, credential_refs),
        )
        _confirm_waiting(api, identity, passphrase)
    if as_json:
        emit_json({"session_id": opened.session_id, "token": opened.token, "expires_at": opened.expires_at})
        return
    console.print(f"Session {opened.session_id} is unlocked until {opened.expires_at[:19]}.")
    console.print(f"For the agent: AILERON_TOKEN={opened.token}")


def _host_port(text: str, *, example: str, default_host: str | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep and default_host is not None:
        host = default_host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"{text!r} is not {'[ADDRESS:]PORT' if default_host else 'HOST:PORT'} (e.g. {example})", 2)
    return host, int(port)


@click.command("tcp")
@click.argument("destination", metavar="HOST:PORT")
@click.option(
    "--listen",
    metavar="[ADDRESS:]PORT",
    default=None,
    help="Instead: listen here (loopback by default) and tunnel each connection, for clients that cannot use a "
    "ProxyCommand (`aileron tcp db.example.com:5432 --listen 5432 &`, then `psql -h 127.0.0.1`).",
)
@fail_cleanly
def tcp(destination: str, listen: str | None) -> None:
    """Relay standard input and output to HOST:PORT through the session's proxy, for raw TCP the organization
    allows as a `host:port` egress rule. Inside a sandbox, ssh uses it as its ProxyCommand (`ssh git@host`
    just works when a rule allows host:22); without a rule the proxy refuses, and this says why in one line."""
    import ipaddress

    from runtime.sandbox import relay

    host, port = _host_port(destination, example="github.com:22")
    if ":" in host and not host.startswith("["):
        destination = f"[{host}]:{port}"  # an IPv6 address, as ssh's %h gives it
    local = _host_port(listen, example="5432", default_host="127.0.0.1") if listen is not None else None
    if local is not None:
        try:
            loopback = ipaddress.ip_address(local[0].strip("[]")).is_loopback
        except ValueError:
            loopback = local[0] == "localhost"
        if not loopback:
            # Whoever reaches the port rides on this session's token: only this machine's own processes may.
            raise CliError(f"--listen takes a loopback address (127.0.0.1, ::1), not {local[0]}", exit_code=2)
        local = (local[0].strip("[]"), local[1])
    proxy_url = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or ""
    if not proxy_url:
        raise CliError("HTTPS_PROXY is not set: run this inside an aileron session (`aileron launch`)", exit_code=2)
    if local is not None:
        try:
            listener = relay.inside_listener(*local)
        except OSError as exc:
            raise CliError(f"cannot listen on {local[0]}:{local[1]}: {exc.strerror or exc}") from None
        err_console.print(f"aileron: {local[0]}:{local[1]} leads to {destination} through the proxy", markup=False)
        with contextlib.suppress(KeyboardInterrupt):
            relay.forward(listener, destination, proxy_url, report=lambda line: err_console.print(line, markup=False))
        return
    try:
        sock = relay.open_tunnel(destination, proxy_url)
    except relay.TunnelRefused as exc:
        raise CliError(str(exc)) from None
    sys.exit(relay.relay_stdio(sock))


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--sandbox",
    type=click.Choice(["docker", "netns", "none"]),
    default="docker",
    show_default=True,
    help="Where the agent runs; `none` runs it on this host, unsandboxed (developer mode).",
)
@click.option(
    "--proxy",
    "proxy_text",
    envvar="AILERON_PROXY",
    default=None,
    help="The data plane's proxy, HOST:PORT [env AILERON_PROXY; default: what the server you are logged in to "
    f"says, else {DEFAULT_PROXY}].",
)
@click.option("--name", default=None, help="The agent's name in audit and approvals [default: the command].")
@click.option("--minutes", type=click.IntRange(1, 1440), default=720, show_default=True, help="Session lifetime.")
@click.option(
    "--dir",
    "project",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=".",
    help="The project: mounted at /workspace; its .devcontainer/devcontainer.json picks the image [default: .].",
)
@click.option(
    "--project",
    "project_slug",
    default=None,
    help=PROJECT_HELP + " [default: the devcontainer's customizations.aileron.project]",
)
@click.option("--credential", "credential_refs", multiple=True, help=CREDENTIAL_HELP)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@fail_cleanly
def launch(
    sandbox: str,
    proxy_text: str | None,
    name: str | None,
    minutes: int,
    project: Path,
    project_slug: str | None,
    credential_refs: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Run an agent through Aileron: `aileron launch claude "fix the flaky test"`, or any command
    (`aileron launch -- ./agent.sh`). Its held requests are asked in this terminal."""
    from aileron_cli import launch as launching
    from aileron_cli.sessions import KeyChannel, session_open

    proxy = launching.Proxy.parse(proxy_text) if proxy_text else None
    argv = list(command)
    plan = _sandbox_plan(sandbox, project.resolve()) if sandbox != "none" else None
    configured = _refuse_strict_unsandboxed(project.resolve()) if plan is None else plan.aileron_project
    if project_slug is None:
        project_slug = configured or None  # `--project ""`: none, whatever the devcontainer says
    login = require_login()
    passphrase = read_passphrase()
    with logged_in_api() as api:
        proxy = proxy or launching.Proxy.parse(server_proxy(api) or DEFAULT_PROXY)
        identity = org_identity(api, login)
        org = identity.organization_id
        channel = KeyChannel.choose(api, org, key_socket())
        project_id = project_id_of(api, org, project_slug)
        pins = pinned_credentials(api, identity, credential_refs)
        cannot_decide = _why_not_an_approver(api, org)
        _confirm_waiting(api, identity, passphrase)

        def open_session() -> Any:
            return session_open(
                api,
                identity,
                passphrase=passphrase,
                name=name or Path(argv[0]).name,
                minutes=minutes,
                channel=channel,
                project_id=project_id,
                pins=pins,
            )

        def end(opened: Any) -> None:
            launching.end_session(api, channel, opened)

        def decide(approval_id: str, verb: str, reason: str) -> str:
            return _decide_here(api, org, approval_id, verb, reason)

        def follow(handle: Any) -> None:
            _follow_approvals(login, org, handle)

        def record(opened: Any, about: dict[str, Any]) -> Any:
            return _record_session(opened, argv, {**about, "project": project_slug or ""})

        warn = warn_line
        if plan is None:
            code = launching.launch_unsandboxed(
                argv=argv,
                proxy=proxy,
                open_session=open_session,
                end_session=end,
                connectors=installed_connectors(),
                warn=warn,
                decide=decide,
                follow=follow,
                record=record,
                cannot_decide=cannot_decide,
            )
        else:
            from connectors.registry import manifest
            from runtime.sandbox import backends, mediation

            found = installed_connectors()
            policy = api.get(f"/api/v1/orgs/{org}/shell-policy/")
            if plan.mediation == "off" and isinstance(policy, dict) and policy.get("mode") == "enforce":
                warn("aileron: the organization enforces its shell policy: `mediation: off` is not applied")
                plan = replace(plan, mediation="default")
            if plan.mediation == mediation.STRICT:
                egress = api.get(f"/api/v1/orgs/{org}/egress/")
                refusal = mediation.strict_organization_refusal(egress=egress, shell_policy=policy)
                if refusal is not None:
                    raise CliError(refusal, exit_code=2)
                policy = mediation.strict_shell_policy(policy)
            code = launching.launch_sandboxed(
                plan=plan,
                backend=backends.get(plan.backend),
                argv=argv,
                proxy=proxy,
                open_session=open_session,
                end_session=end,
                connectors=found,
                manifest_json=(json.dumps(manifest(found), indent=2, sort_keys=True) + "\n").encode(),
                hint=agent_hint(found, sandboxed=True),
                shell_policy=policy if isinstance(policy, dict) else None,
                warn=warn,
                decide=decide,
                follow=follow,
                record=record,
                cannot_decide=cannot_decide,
            )
    sys.exit(code)


def _sandbox_plan(name: str, project: Path) -> Any:
    """Read the project's devcontainer, check the backend and resolve the image before anything is unlocked:
    a one-line error otherwise. The devcontainer comes first: a bad file is the user's to fix on any machine."""
    from aileron_cli.launch import SandboxPlan
    from runtime.sandbox import backends
    from runtime.sandbox.devcontainer import load_config, resolve_image
    from runtime.sandbox.image import ImageError, base_image_tag, engine, local_image
    from runtime.sandbox.mediation import STRICT, strict_launch_refusal

    try:
        config = load_config(project)
    except ImageError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if config.mediation == STRICT:
        refusal = strict_launch_refusal(sandbox=name, tier=config.tier)
        if refusal is not None:
            raise CliError(refusal, exit_code=2)
    if config.runtime == "gvisor" and name != "docker":
        raise CliError(_gvisor_elsewhere(config.source, name), exit_code=2)
    backend = backends.get(name)
    reason = backend.available()
    if reason is not None:
        raise CliError(f"the {name} sandbox is not available here: {reason}", exit_code=2)
    try:
        if name == "docker":
            client = engine()
            if local_image(client, base_image_tag()) is None:
                raise CliError(f"the base image {base_image_tag()} is not built: run `aileron sandbox build-base`")
            if config.runtime == "gvisor":
                from runtime.sandbox.docker_backend import gvisor_unavailable

                if (why := gvisor_unavailable(client)) is not None:
                    raise CliError(why, exit_code=2)
            image = resolve_image(config, client, warn_line).ref
        else:
            image = ""  # netns: a read-only view of this host's own system
            if config.source is not None and config.tier != "base":
                warn_line(f"aileron: the netns sandbox uses this host's system; {config.source}'s image is for docker")
    except ImageError as exc:
        raise CliError(str(exc), exit_code=2) from None
    return SandboxPlan(
        backend=name,
        image=image,
        tier=config.tier,
        mediation=config.mediation,
        approval_surface=config.approval_surface,
        project=project,
        mcps=tuple(m.as_dict() for m in config.mcps),
        runtime=config.runtime,
        aileron_project=config.project,
    )


def _refuse_strict_unsandboxed(project: Path) -> str:
    """`--sandbox none` in a project whose devcontainer asks for strict mediation: one line, before anything.
    A devcontainer that does not load is not this mode's business: without a sandbox it is not used.
    The devcontainer's project slug ("" for none)."""
    from runtime.sandbox.devcontainer import load_config
    from runtime.sandbox.image import ImageError
    from runtime.sandbox.mediation import STRICT, strict_launch_refusal

    try:
        config = load_config(project)
    except ImageError:
        return ""
    refusal = strict_launch_refusal(sandbox="none", tier=config.tier) if config.mediation == STRICT else None
    if refusal is not None:
        raise CliError(refusal, exit_code=2)
    if config.runtime == "gvisor":
        raise CliError(_gvisor_elsewhere(config.source, "none"), exit_code=2)
    return config.project


def _gvisor_elsewhere(source: Path | None, sandbox: str) -> str:
    return (
        f'{source or "devcontainer.json"} asks for runtime "gvisor", which runs the docker sandbox under runsc; '
        f"the {sandbox} sandbox cannot (use --sandbox docker)"
    )


def _sessions_dir() -> Path:
    return state.home() / "run" / "sessions"


def _record_session(opened: Any, argv: list[str], about: dict[str, Any]) -> Any:
    """A note of the live session for `aileron session info` and `aileron status` (no secret in it)."""
    folder = _sessions_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{opened.session_id}.json"
    note = {
        "session_id": opened.session_id,
        "expires_at": opened.expires_at,
        "agent": Path(argv[0]).name if argv else "",
        "command": argv[:1],
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **about,
    }
    path.write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return lambda: path.unlink(missing_ok=True)


def live_sessions() -> list[dict[str, Any]]:
    """This machine's sessions whose `aileron launch` is still running."""
    found = []
    folder = _sessions_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            note = json.loads(path.read_text(encoding="utf-8"))
            os.kill(int(note["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # its launcher is gone
            continue
        found.append(note)
    return found


@session.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_cleanly
def session_info(as_json: bool) -> None:
    """The live sessions `aileron launch` runs on this machine: agent, sandbox, image, since when."""
    sessions = live_sessions()
    if as_json:
        emit_json(sessions)
        return
    if not sessions:
        console.print("No live session on this machine.")
        return
    for s in sessions:
        console.print(
            f"{s['session_id']}  {s.get('agent', '')}  sandbox {s.get('sandbox', 'none')}"
            + (f"  project {s['project']}" if s.get("project") else "")
            + f"  image {s.get('image') or '-'}  since {s.get('started_at', '')}  until {str(s.get('expires_at'))[:19]}"
        )


def _confirm_waiting(api: ApiClient, identity: Any, passphrase: str) -> None:
    """Your keys are unlocked anyway: let in whoever waits for a team vault you own (one line each). Never
    stops the launch: `aileron vault confirm` says more."""
    from aileron_cli.vaultops import VaultClient

    client = VaultClient(api, identity)
    try:
        done = client.confirm_if_waiting(passphrase)
    except CliError as exc:
        warn_line(f"aileron: could not confirm who waits for your team vaults: {exc}")
        return
    finally:
        client.close()
    for entry in done:
        if entry["confirmed"]:
            warn_line(f"aileron: confirmed {entry['email']} in {entry['vault']}")
        else:
            warn_line(f"aileron: {entry['email']} still waits for {entry['vault']}: {entry['error']}")


def _why_not_an_approver(api: ApiClient, organization_id: str) -> str:
    """Why this person may decide no approval in the organization (their role), or "" when they may."""
    from tenants.permissions import Perm, role_has

    memberships = api.get("/api/v1/whoami/").get("memberships") or []
    role = next((m["role"] for m in memberships if m["organization"] == organization_id), None)
    if role is not None and role_has(role, Perm.APPROVAL_DECIDE):
        return ""
    return f"your role ({role or 'none'}) lacks {Perm.APPROVAL_DECIDE.value}"


def _decide_here(api: Any, organization_id: str, approval_id: str, verb: str, reason: str) -> str:
    """A decision typed in the launching terminal (aileron owns the keys; the agent never sees them)."""
    from aileron_cli.approval_cmd import decided_message

    result = api.post(f"/api/v1/orgs/{organization_id}/approvals/{approval_id}/{verb}/", {"reason": reason})
    return str(decided_message(result))


def _follow_approvals(login: state.Login, organization_id: str, handle: Any) -> None:
    from aileron_cli.approval_cmd import watch_loop, websocket_url

    url = websocket_url(login.server, organization_id)
    watch_loop(url, token=login.token, org=organization_id, handle=handle, warn=lambda _line: None)


@session.command("end")
@click.argument("session_id")
@fail_cleanly
def session_end(session_id: str) -> None:
    """End a session: the credential service wipes its keys and the token is revoked."""
    from aileron_cli.sessions import KeyChannel

    login = require_login()
    with logged_in_api() as api:
        org = org_identity(api, login).organization_id
        channel = KeyChannel.choose(api, org, key_socket())
        try:
            wiped = bool(channel.send({"op": "close", "session_id": session_id}, timeout=10).get("closed"))
        except (OSError, ValueError, CliError) as exc:
            warn_line(f"aileron: the data plane did not wipe the session's keys ({exc}); revoking its token")
            wiped = False
        api.delete(f"/api/v1/orgs/{org}/session-tokens/{session_id}/")
    console.print(f"Session {session_id} ended; token revoked" + ("; keys wiped." if wiped else "."))
