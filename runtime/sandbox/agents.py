"""The real agent CLIs a sandbox image can carry (Claude Code, Codex, Gemini CLI): pins, fetching, install, launch.

    fetched = fetch_agents(("claude-code",), arch="x86_64", rootfs_ref=ref, client=client, progress=print)
    dockerfile_lines(fetched)           # appended to the base image's Dockerfile (a no-network build)
    launch_argv(["claude", "-p", "hi"])  # how `aileron launch claude` runs it inside the sandbox

The npm packages are fetched on the host with `npm pack` (the registry is reached there, never from a build) into
the cache folder, keyed by their pinned versions; Debian's Node.js (for Codex's and Gemini CLI's JavaScript) is
downloaded as .deb files by the Debian root filesystem's own apt, run once with the host's network, and cached.
The image build itself only unpacks them, with no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.sandbox.image import ImageError

if TYPE_CHECKING:
    from docker import DockerClient

Progress = Callable[[str], None]

INSTALL_ROOT = "/opt/aileron-agents"
STAGED = "/tmp/agents"  # noqa: S108 - inside the image build, where the context's agents folder is copied
LABEL_AGENTS = "org.aileron.agents"  # "claude-code@2.1.332,codex@0.171.0" on an image that carries them


@dataclass(frozen=True)
class Agent:
    name: str  # what `build-base --with` takes
    command: str  # what `aileron launch` takes and the image has on PATH
    package: str  # the npm package
    version: str
    native: str  # the npm spec of the platform's native part, `{arch}` being x64 or arm64; "" when none
    needs_node: bool  # the command is JavaScript run by Debian's Node.js
    bin: str  # the command's file, relative to the agent's folder under INSTALL_ROOT

    @property
    def pinned(self) -> str:
        return f"{self.name}@{self.version}"


# The versions every image gets: the one place they are pinned.
AGENTS = {
    agent.name: agent
    for agent in (
        # A native (Bun) executable: the platform package alone is the whole CLI; no Node.js needed.
        Agent(
            name="claude-code",
            command="claude",
            package="@anthropic-ai/claude-code",
            version="2.1.332",
            native="@anthropic-ai/claude-code-linux-{arch}@{version}",
            needs_node=False,
            bin="package/claude",
        ),
        # A node wrapper that runs the platform package's (musl) executable, found next to it in node_modules.
        Agent(
            name="codex",
            command="codex",
            package="@openai/codex",
            version="0.171.0",
            native="@openai/codex@{version}-linux-{arch}",
            needs_node=True,
            bin="node_modules/@openai/codex/bin/codex.js",
        ),
        # One JavaScript bundle with no required dependencies.
        Agent(
            name="gemini-cli",
            command="gemini",
            package="@google/gemini-cli",
            version="0.61.0",
            native="",
            needs_node=True,
            bin="node_modules/@google/gemini-cli/bundle/gemini.js",
        ),
    )
}
BY_COMMAND = {agent.command: agent for agent in AGENTS.values()}


class AgentError(ImageError):
    """A failure to report as one line."""


def parse_with(text: str) -> tuple[str, ...]:
    """`--with claude-code,codex` as agent names; an unknown one is an error that lists the known ones."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in AGENTS]
    if unknown:
        raise AgentError(f"unknown agent {unknown[0]!r} for --with: choose from {', '.join(AGENTS)}")
    return tuple(sorted(set(names)))


def label_value(names: Iterable[str]) -> str:
    return ",".join(AGENTS[name].pinned for name in sorted(set(names)))


def agents_in(label: str | None) -> tuple[str, ...]:
    """The agents an image's label says it carries at today's pinned versions (an older pin counts as absent)."""
    pinned = {agent.pinned: agent.name for agent in AGENTS.values()}
    return tuple(sorted(pinned[item] for item in (label or "").split(",") if item in pinned))


# --- fetching on the host -----------------------------------------------------------------------------------


def _npm_arch(arch: str) -> str:
    return {"x86_64": "x64", "aarch64": "arm64"}[arch]


def npm_specs(agent: Agent, arch: str) -> tuple[str, ...]:
    """The npm specs to pack for an agent on this architecture: its package and its native part."""
    specs = [] if agent.name == "claude-code" else [f"{agent.package}@{agent.version}"]
    if agent.native:
        specs.append(agent.native.format(arch=_npm_arch(arch), version=agent.version))
    return tuple(specs)


def tarball_name(spec: str) -> str:
    """The file `npm pack SPEC` writes: `@scope/name@version` -> `scope-name-version.tgz`."""
    name, _, version = spec.rpartition("@")
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


@dataclass(frozen=True)
class Fetched:
    agents: tuple[Agent, ...]
    arch: str
    tarballs: dict[str, Path]  # npm spec -> its packed tarball in the cache
    debs: tuple[Path, ...]  # Debian's Node.js and what it needs; empty when no agent needs Node.js


def agents_cache(cache: Path) -> Path:
    return cache / "agents"


def fetch_agents(
    names: Sequence[str], *, arch: str, cache: Path, rootfs_ref: str, client: DockerClient, progress: Progress
) -> Fetched:
    agents = tuple(AGENTS[name] for name in sorted(set(names)))
    folder = agents_cache(cache) / "npm"
    folder.mkdir(parents=True, exist_ok=True)
    tarballs: dict[str, Path] = {}
    missing: list[str] = []
    for agent in agents:
        for spec in npm_specs(agent, arch):
            tarballs[spec] = folder / tarball_name(spec)
            if not tarballs[spec].is_file():
                missing.append(spec)
    if missing:
        _npm_pack(missing, folder, progress)
    else:
        progress(f"the agents' npm packages from the cache ({folder})")
    debs: tuple[Path, ...] = ()
    if any(agent.needs_node for agent in agents):
        debs = _node_debs(client, rootfs_ref=rootfs_ref, cache=agents_cache(cache), progress=progress)
    return Fetched(agents=agents, arch=arch, tarballs=tarballs, debs=debs)


def _npm_pack(specs: list[str], folder: Path, progress: Progress) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise AgentError("npm is not installed on this machine, and it fetches the agents: apt-get install npm")
    progress(f"npm pack {' '.join(specs)} (the native parts weigh about 180 MB each)")
    partial = folder / ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    result = subprocess.run(  # noqa: S603 - fixed arguments, specs from the pins above
        [npm, "pack", "--silent", "--pack-destination", str(partial), *specs],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise AgentError(f"npm pack failed: {(lines or ['no output'])[-1][:300]}")
    for spec in specs:
        name = tarball_name(spec)
        if not (partial / name).is_file():
            raise AgentError(f"npm pack {spec} wrote no {name}")
        (partial / name).replace(folder / name)
    partial.rmdir()


def _node_debs(client: DockerClient, *, rootfs_ref: str, cache: Path, progress: Progress) -> tuple[Path, ...]:
    """Debian's nodejs and its dependencies, as the root filesystem's apt resolves them, cached per root filesystem."""
    key = hashlib.sha256(rootfs_ref.encode()).hexdigest()[:12]
    folder = cache / f"debs-{key}"
    done = folder / "complete.json"
    if done.is_file():
        progress(f"Debian's Node.js packages from the cache ({folder})")
        return tuple(folder / name for name in json.loads(done.read_text(encoding="utf-8")))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    progress(f"downloading Debian's Node.js packages with {rootfs_ref}'s apt (host network)")
    script = (
        "set -e; apt-get update -qq -o Acquire::Languages=none; "
        "apt-get install -y -qq --download-only --no-install-recommends -o Dir::Cache::archives=/out nodejs; "
        "rm -rf /out/partial /out/lock"
    )
    from docker.errors import ContainerError, DockerException

    try:
        client.containers.run(
            rootfs_ref,
            ["bash", "-c", script],
            network_mode="host",
            volumes={str(folder): {"bind": "/out", "mode": "rw"}},
            remove=True,
            stderr=True,
        )
    except ContainerError as exc:
        text = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
        lines = [line for line in text.splitlines() if line.strip()]
        raise AgentError(f"downloading Node.js failed: {(lines or ['apt-get failed'])[-1][:300]}") from None
    except DockerException as exc:
        raise AgentError(f"downloading Node.js failed: {str(exc).splitlines()[0][:300]}") from None
    names = sorted(p.name for p in folder.glob("*.deb"))
    if not any(name.startswith("nodejs_") for name in names):
        raise AgentError("downloading Node.js failed: apt-get fetched no nodejs package")
    done.write_text(json.dumps(names) + "\n", encoding="utf-8")
    return tuple(folder / name for name in names)


# --- the image ----------------------------------------------------------------------------------------------


def stage_context(fetched: Fetched, context: Path) -> None:
    """Put the fetched files into the build context's `agents` folder (hard links where the file system allows)."""
    npm, debs = context / "agents" / "npm", context / "agents" / "debs"
    npm.mkdir(parents=True)
    debs.mkdir(parents=True)
    for source in [*fetched.tarballs.values(), *fetched.debs]:
        target = (npm if source.suffix == ".tgz" else debs) / source.name
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def dockerfile_lines(fetched: Fetched) -> str:
    """Dockerfile lines (run as root, no network) that install the fetched agents and check each one starts."""
    steps = ["set -e"]
    if fetched.debs:
        steps.append(f"dpkg -i {STAGED}/debs/*.deb >/dev/null")
        steps.append("node --version")
    for agent in fetched.agents:
        home = f"{INSTALL_ROOT}/{agent.name}"
        for spec in npm_specs(agent, fetched.arch):
            tgz = f"{STAGED}/npm/{tarball_name(spec)}"
            if agent.name == "claude-code":
                target = home  # the native package holds the executable at package/claude
                steps.append(f"mkdir -p {target}")
                steps.append(f"tar -xzf {tgz} -C {target} --no-same-owner")
                continue
            # the package, and the native part under its alias, as npm would lay them out in node_modules
            main = spec == f"{agent.package}@{agent.version}"
            module = agent.package if main else f"{agent.package}-linux-{_npm_arch(fetched.arch)}"
            target = f"{home}/node_modules/{module}"
            steps.append(f"mkdir -p {target}")
            steps.append(f"tar -xzf {tgz} -C {target} --strip-components=1 --no-same-owner")
        steps.append(f"chmod 0755 {home}/{agent.bin}")
        steps.append(f"ln -sf {home}/{agent.bin} /usr/local/bin/{agent.command}")
    steps.append(f"rm -rf {STAGED}")
    steps += [f"HOME=/tmp {agent.command} --version >/dev/null" for agent in fetched.agents]
    steps.append("rm -rf /tmp/.claude* /tmp/.codex /tmp/.gemini /tmp/.npm")
    body = "; \\\n    ".join(steps)
    return f"# The agents: {label_value(a.name for a in fetched.agents)}\nCOPY agents {STAGED}\nRUN {body}\n"


# --- launching ----------------------------------------------------------------------------------------------

# Each agent's own switches for an offline, unattended start, through their documented settings.
AGENT_ENV: dict[str, dict[str, str]] = {
    "claude": {
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, error reports or update checks
        "DISABLE_AUTOUPDATER": "1",
        "IS_SANDBOX": "1",  # lets --dangerously-skip-permissions run in an image whose agent is root
    },
    "codex": {},  # all in CODEX_OPTIONS
    "gemini": {
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "GEMINI_CLI_NO_RELAUNCH": "true",
        "GEMINI_SANDBOX": "false",  # the Aileron sandbox is the sandbox
    },
}


def missing_line(command: str, *, tier: str) -> str:
    """The one line shown when an agent's command is not in the image (or on the host, for `tier="host"`):
    the exact command that adds it."""
    agent = BY_COMMAND[command]
    if tier == "host":  # --sandbox none, or netns, which runs this host's system
        return f"aileron: {command} is not installed on this host: npm install -g {agent.package}@{agent.version}"
    if tier == "base":
        fix = f"run `aileron sandbox build-base --with {agent.name}`"
    elif tier == "build":
        fix = f"uncomment the {agent.name} lines in the project's Dockerfile, then run `aileron sandbox build`"
    else:
        fix = f"install {agent.package}@{agent.version} in the project's image"
    return f"aileron: {command} is not in this sandbox image: {fix}"


def launch_argv(
    command: list[str], *, hint_file: str, mcp_config: str | None = None, tier: str = "base"
) -> list[str] | None:
    """A known agent's command as the sandbox runs it (a bash script then the user's arguments), else None.

    The script says in one line how to add the agent when the image lacks it, prepares what the agent would
    otherwise ask about on its first start, and passes the hint (and the project's MCP servers) its own way.
    """
    if not command or command[0] not in BY_COMMAND:
        return None
    name = command[0]
    missing = shlex.quote(missing_line(name, tier=tier))
    check = f"command -v {name} >/dev/null || {{ echo {missing} >&2; exit 127; }}"
    if name == "claude":
        # Onboarding done and the placeholder key accepted, so an interactive start asks nothing; the sandbox and
        # Aileron's policies are the permission layer, so its own prompts are off.
        onboarding = (
            '[ -e "$HOME/.claude.json" ] || printf \'{"hasCompletedOnboarding":true,"bypassPermissionsModeAccepted":'
            'true,"customApiKeyResponses":{"approved":["%s"]},"projects":{"%s":{"hasTrustDialogAccepted":true}}}\' '
            '"${ANTHROPIC_API_KEY: -20}" "$PWD" > "$HOME/.claude.json"'
        )
        mcp = f" --mcp-config {mcp_config}" if mcp_config else ""
        run = f'exec claude --dangerously-skip-permissions --append-system-prompt "$(cat {hint_file})"{mcp} "$@"'
        return ["bash", "-c", f"{check}; {onboarding}; {run}", name, *command[1:]]
    if name == "codex":
        mcp = ""
        if mcp_config:
            mcp = f" $(python3 -c {shlex.quote(_CODEX_MCP)} {mcp_config})"
        # `codex exec` in /workspace, which need not be a git repository
        skip_check = 'if [ "${1:-}" = exec ]; then shift; set -- exec --skip-git-repo-check "$@"; fi'
        # the hint as Codex's global instructions ($CODEX_HOME/AGENTS.md), which every mode reads
        instructions = (
            'home="${CODEX_HOME:-$HOME/.codex}"; mkdir -p "$home"; '
            f'[ -e "$home/AGENTS.md" ] || cp {hint_file} "$home/AGENTS.md"'
        )
        run = f'exec codex {" ".join(shlex.quote(option) for option in CODEX_OPTIONS)}{mcp} "$@"'
        return ["bash", "-c", f"{check}; {skip_check}; {instructions}; {run}", name, *command[1:]]
    # gemini: its instruction file and settings, written once into the agent's home
    settings = json.dumps(
        {
            "privacy": {"usageStatisticsEnabled": False},
            "general": {"disableAutoUpdate": True},
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "mcpServers": {},
        }
    )
    prepare = (
        'mkdir -p "$HOME/.gemini"; '
        f'[ -e "$HOME/.gemini/GEMINI.md" ] || cp {hint_file} "$HOME/.gemini/GEMINI.md"; '
        # without python3 (a BYO image), the settings without the MCP servers
        f'[ -e "$HOME/.gemini/settings.json" ] || {{ python3 -c {shlex.quote(_GEMINI_SETTINGS)} '
        f'{shlex.quote(settings)} {mcp_config or "-"} > "$HOME/.gemini/settings.new" '
        f'|| printf %s {shlex.quote(settings)} > "$HOME/.gemini/settings.new"; '
        'mv "$HOME/.gemini/settings.new" "$HOME/.gemini/settings.json"; }'
    )
    return ["bash", "-c", f'{check}; {prepare}; exec gemini "$@"', name, *command[1:]]


# Codex's documented settings (-c key=TOML) for an unattended start: the placeholder key sent as a Bearer token by
# a provider of its own (plain OPENAI_API_KEY sends none), over HTTP rather than WebSockets (which cost ~6 s of
# retries first); no analytics, plugins or model discovery; the Aileron sandbox instead of Codex's own, which
# would keep its commands from the network; no approval questions, the workspace trusted.
CODEX_OPTIONS = (
    "-c",
    "model_provider=aileron",
    "-c",
    'model_providers.aileron={name="OpenAI through Aileron",base_url="https://api.openai.com/v1",'
    'env_key="OPENAI_API_KEY",wire_api="responses",supports_websockets=false}',
    "-c",
    "analytics.enabled=false",
    "--disable",
    "plugins",
    "--disable",
    "api_key_model_discovery",
    "-c",
    'sandbox_mode="danger-full-access"',
    "-c",
    'approval_policy="never"',
    "-c",
    'projects."/workspace".trust_level="trusted"',
)
# -c mcp_servers.NAME={command=…,args=[…]} per server of the MCP config file.
_CODEX_MCP = (
    "import json,sys\n"
    "for n,s in json.load(open(sys.argv[1]))['mcpServers'].items():\n"
    "    a=json.dumps(s['args'], separators=(',',':'))\n"
    "    print('-c', 'mcp_servers.%s={command=%s,args=%s}' % (n, json.dumps(s['command']), a))"
)
# settings.json with the project's MCP servers merged in.
_GEMINI_SETTINGS = (
    "import json,sys\n"
    "s=json.loads(sys.argv[1])\n"
    "if sys.argv[2] != '-': s['mcpServers']=json.load(open(sys.argv[2]))['mcpServers']\n"
    "print(json.dumps(s))"
)
