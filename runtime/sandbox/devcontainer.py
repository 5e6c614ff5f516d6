"""A project's sandbox from `.devcontainer/devcontainer.json`: which image runs the agent, and how it is mediated.

    config = load_config(project_dir)                 # pure: reads files, never Docker
    resolved = resolve_image(config, client, progress)  # the one Docker step: build or check the image

Tiers, the first that applies wins:

- `customizations.aileron.image`: bring your own image (`byo=True`). It is used as supplied; `aileron launch`
  injects the runtime contract (the aileron CLI and shims, discovery files, proxy settings, session CA, shell
  mediation files). It wins over `image`/`build`, so a devcontainer made for an editor can name another image
  for agents.
- `build.dockerfile` (with `build.context`, `build.args`, `build.target`): built locally, FROM images that are
  already there (nothing is pulled), tagged `aileron/project-<hash of the context and Dockerfile paths>:latest`
  and rebuilt only when the Dockerfile, its arguments, the context's files or a FROM image changed.
- `image`: an image already on this machine, built FROM aileron/sandbox-base (its labels say so).
- neither, or no file at all: `aileron/sandbox-base:<version>`.

The `customizations.aileron` block (every key optional; any other key is an error):

- `mediation`: how the mediated shell treats the agent's commands. "default": the organization's shell policy
  as it is (refused commands audited; every command too when it says `record_allowed`). "strict": only commands
  matching the organization's allow patterns run and every command is audited; it needs a sandbox, an image
  FROM the base, an egress allow list and an enforced shell policy with an allow list, and `aileron launch`
  refuses it in one line otherwise (runtime/sandbox/mediation.py). "off": no shell mediation. The network
  boundary and the proxy (credentials, policy, approvals) apply in every mode; an organization that enforces
  its shell policy does not get "off", since the project folder, this file included, is writable by the agent.
- `approval_surface`: where the user decides held requests: "terminal" (the terminal that ran
  `aileron launch`), "web" (the approvals page), "both" (the default).
- `image`: the bring-your-own image, above.
- `mcps`: the user's MCP servers for the agent, a list of `{"name", "command", "args"?, "env"?}`; passed through.
- `runtime`: "runc" (the default) or "gvisor": the docker sandbox runs under gVisor's runsc, an application
  kernel between the agent and the host's, where the engine has it (docker_backend.py says how to add it);
  `aileron launch` refuses "gvisor" in one line where it cannot run.
- `project`: the slug of the organization's project the agent works for: its sessions are attributed to it and
  get the project's own TCP rules besides the organization's (`aileron launch --project` overrides it).

JSON with comments is accepted as devcontainer.json allows: `//` and `/* */` comments and trailing commas.
Other devcontainer keys (features, forwardPorts, postCreateCommand, ...) are not applied; `ignored` lists them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.sandbox.image import (
    LABEL_VERSION,
    ImageError,
    Progress,
    base_image_tag,
    docker_build,
    local_image,
    remove_untagged,
)

if TYPE_CHECKING:
    from docker import DockerClient

MEDIATION_MODES = ("default", "strict", "off")
APPROVAL_SURFACES = ("terminal", "web", "both")
DEFAULT_MEDIATION = "default"
DEFAULT_APPROVAL_SURFACE = "both"
AILERON_KEYS = ("mediation", "approval_surface", "image", "mcps", "runtime", "project")
PROJECT_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,60}")
RUNTIMES = ("runc", "gvisor")
DEFAULT_RUNTIME = "runc"
MCP_KEYS = ("name", "command", "args", "env")
BUILD_KEYS = ("dockerfile", "context", "args", "target")
# Keys with no effect on the sandbox that are not worth reporting as ignored.
QUIET_KEYS = frozenset({"$schema", "name", "customizations"})
PROJECT_REPOSITORY = "aileron/project"
LABEL_BUILD_DIGEST = "org.aileron.build-digest"
CONFIG_LOCATIONS = (Path(".devcontainer/devcontainer.json"), Path(".devcontainer.json"))
_MCP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DevcontainerError(ImageError):
    """devcontainer.json is unreadable or invalid; the message names the file and the key path."""


@dataclass(frozen=True)
class DockerfileBuild:
    dockerfile: Path  # absolute
    context: Path  # absolute
    args: tuple[tuple[str, str], ...] = ()
    target: str | None = None


@dataclass(frozen=True)
class McpServer:
    name: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "command": self.command, "args": list(self.args), "env": dict(self.env)}


@dataclass(frozen=True)
class SandboxConfig:
    image: str  # the image to run: the base tag, the image named, or the tag the build produces
    build: DockerfileBuild | None = None  # set: resolve_image builds `image` from this Dockerfile
    byo: bool = False  # bring-your-own: launch injects the runtime contract into an image not FROM the base
    mediation: str = DEFAULT_MEDIATION
    approval_surface: str = DEFAULT_APPROVAL_SURFACE
    mcps: tuple[McpServer, ...] = ()
    runtime: str = DEFAULT_RUNTIME  # "gvisor": the docker sandbox under runsc
    project: str = ""  # the Aileron project (its slug) the agent's sessions are started for; "" for none
    source: Path | None = None  # the devcontainer.json read; None when the project has none
    ignored: tuple[str, ...] = ()  # devcontainer keys present but not applied (features, forwardPorts, ...)

    @property
    def tier(self) -> str:
        """ "byo", "build", "image" or "base"."""
        if self.byo:
            return "byo"
        if self.build is not None:
            return "build"
        return "image" if self.image != base_image_tag() else "base"

    def as_dict(self) -> dict[str, Any]:
        build = None
        if self.build is not None:
            build = {
                "dockerfile": str(self.build.dockerfile),
                "context": str(self.build.context),
                "args": dict(self.build.args),
                "target": self.build.target,
            }
        return {
            "source": str(self.source) if self.source else None,
            "tier": self.tier,
            "image": self.image,
            "build": build,
            "byo": self.byo,
            "mediation": self.mediation,
            "approval_surface": self.approval_surface,
            "mcps": [m.as_dict() for m in self.mcps],
            "runtime": self.runtime,
            "project": self.project,
            "ignored": list(self.ignored),
        }


@dataclass(frozen=True)
class ResolvedImage:
    ref: str  # what SandboxSpec.image gets
    image_id: str
    built: bool  # resolve_image ran a build
    seconds: float
    aileron_version: str | None  # the base version it derives from (its label); None for a BYO image without it


# --- reading ------------------------------------------------------------------------------------------------


def find_config(project: Path) -> Path | None:
    for candidate in CONFIG_LOCATIONS:
        if (project / candidate).is_file():
            return project / candidate
    return None


def load_config(project: Path) -> SandboxConfig:
    """The project's sandbox configuration; the base image when it has no devcontainer.json."""
    path = find_config(project)
    if path is None:
        return SandboxConfig(image=base_image_tag())
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DevcontainerError(f"{path}: cannot read it ({exc})") from None
    return parse_config(text, path=path)


def parse_config(text: str, *, path: Path) -> SandboxConfig:
    """Validate devcontainer.json's text; `path` places relative paths and names the file in errors."""
    data = _load_jsonc(text, path)
    where = _Where(path)
    if not isinstance(data, dict):
        raise where.error("", f"must be a JSON object (got {_kind(data)})")
    if "dockerComposeFile" in data:
        raise where.error("dockerComposeFile", "Docker Compose configurations are not supported; use image or build")
    folder = path.parent.resolve()
    aileron = _aileron_block(data, where)
    build = _build(data, folder, where)
    image = data.get("image")
    if image is not None:
        image = _image_ref(image, "image", where)
        if build is not None:
            raise where.error("image", "cannot be combined with build (choose one)")
    byo_image = aileron.get("image")
    if byo_image is not None:
        run, build, byo = byo_image, None, True
    elif build is not None:
        run, byo = _project_tag(build), False
    else:
        run, byo = (image or base_image_tag()), False
    ignored = sorted(k for k in data if k not in QUIET_KEYS | {"image", "build", "dockerFile", "context"})
    if isinstance(data.get("build"), dict):
        ignored += sorted(f"build.{k}" for k in data["build"] if k not in BUILD_KEYS)
    return SandboxConfig(
        image=run,
        build=build,
        byo=byo,
        mediation=aileron.get("mediation", DEFAULT_MEDIATION),
        approval_surface=aileron.get("approval_surface", DEFAULT_APPROVAL_SURFACE),
        mcps=aileron.get("mcps", ()),
        runtime=aileron.get("runtime", DEFAULT_RUNTIME),
        project=aileron.get("project", ""),
        source=path,
        ignored=tuple(ignored),
    )


class _Where:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> DevcontainerError:
        return DevcontainerError(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _got(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else _kind(value)


def _one_of(value: Any, choices: tuple[str, ...], key: str, where: _Where) -> str:
    if not isinstance(value, str) or value not in choices:
        raise where.error(key, f"must be one of {', '.join(choices)} (got {_got(value)})")
    return value


def _string(value: Any, key: str, where: _Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(key, f"must be a non-empty string (got {_got(value)})")
    return value


def _image_ref(value: Any, key: str, where: _Where) -> str:
    ref = _string(value, key, where)
    if any(c.isspace() for c in ref):
        raise where.error(key, f"must be an image reference (got {_got(value)})")
    return ref


def _string_map(value: Any, key: str, where: _Where) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise where.error(key, f"must be an object of strings (got {_kind(value)})")
    for name, item in value.items():
        if not isinstance(item, str):
            raise where.error(f"{key}.{name}", f"must be a string (got {_got(item)})")
    return tuple(sorted(value.items()))


def _aileron_block(data: dict[str, Any], where: _Where) -> dict[str, Any]:
    customizations = data.get("customizations")
    if customizations is None:
        return {}
    if not isinstance(customizations, dict):
        raise where.error("customizations", f"must be an object (got {_kind(customizations)})")
    block = customizations.get("aileron")
    if block is None:
        return {}
    key = "customizations.aileron"
    if not isinstance(block, dict):
        raise where.error(key, f"must be an object (got {_kind(block)})")
    for name in block:
        if name not in AILERON_KEYS:
            raise where.error(f"{key}.{name}", f"unknown key (known: {', '.join(sorted(AILERON_KEYS))})")
    result: dict[str, Any] = {}
    if "mediation" in block:
        result["mediation"] = _one_of(block["mediation"], MEDIATION_MODES, f"{key}.mediation", where)
    if "approval_surface" in block:
        result["approval_surface"] = _one_of(
            block["approval_surface"], APPROVAL_SURFACES, f"{key}.approval_surface", where
        )
    if "image" in block:
        result["image"] = _image_ref(block["image"], f"{key}.image", where)
    if "mcps" in block:
        result["mcps"] = _mcps(block["mcps"], f"{key}.mcps", where)
    if "runtime" in block:
        result["runtime"] = _one_of(block["runtime"], RUNTIMES, f"{key}.runtime", where)
    if "project" in block:
        value = block["project"]
        if not isinstance(value, str) or not PROJECT_SLUG.fullmatch(value):
            raise where.error(f"{key}.project", f"must be a project's slug, such as checkout (got {_got(value)})")
        result["project"] = value
    return result


def _mcps(value: Any, key: str, where: _Where) -> tuple[McpServer, ...]:
    if not isinstance(value, list):
        raise where.error(key, f"must be an array of {{name, command, args?, env?}} (got {_kind(value)})")
    servers: list[McpServer] = []
    for index, item in enumerate(value):
        at = f"{key}[{index}]"
        if not isinstance(item, dict):
            raise where.error(at, f"must be an object {{name, command, args?, env?}} (got {_kind(item)})")
        for name in item:
            if name not in MCP_KEYS:
                raise where.error(f"{at}.{name}", f"unknown key (known: {', '.join(sorted(MCP_KEYS))})")
        for required in ("name", "command"):
            if required not in item:
                raise where.error(f"{at}.{required}", "is required")
        name = _string(item["name"], f"{at}.name", where)
        if not _MCP_NAME.match(name):
            raise where.error(f"{at}.name", f"must be letters, digits, '.', '_' or '-' (got {_got(name)})")
        if any(s.name == name for s in servers):
            raise where.error(f"{at}.name", f"duplicate name {_got(name)}")
        command = _string(item["command"], f"{at}.command", where)
        args = item.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise where.error(f"{at}.args", f"must be an array of strings (got {_got(args)})")
        env = _string_map(item.get("env", {}), f"{at}.env", where)
        servers.append(McpServer(name=name, command=command, args=tuple(args), env=env))
    return tuple(servers)


def _build(data: dict[str, Any], folder: Path, where: _Where) -> DockerfileBuild | None:
    if "build" in data:
        block = data["build"]
        if not isinstance(block, dict):
            raise where.error("build", f"must be an object (got {_kind(block)})")
        prefix = "build."
    elif "dockerFile" in data:  # the older top-level spelling, still read by the devcontainer tools
        block = {"dockerfile": data["dockerFile"], **({"context": data["context"]} if "context" in data else {})}
        prefix = ""
    else:
        return None
    dockerfile_key = f"{prefix}dockerfile" if prefix else "dockerFile"
    if "dockerfile" not in block:
        raise where.error(dockerfile_key, "is required")
    dockerfile = folder / _string(block["dockerfile"], dockerfile_key, where)
    if not dockerfile.is_file():
        raise where.error(dockerfile_key, f"no such file {dockerfile}")
    context = folder / _string(block.get("context", "."), f"{prefix}context", where)
    if not context.is_dir():
        raise where.error(f"{prefix}context", f"no such folder {context}")
    args = _string_map(block.get("args", {}), f"{prefix}args", where)
    target = block.get("target")
    if target is not None:
        target = _string(target, f"{prefix}target", where)
    return DockerfileBuild(dockerfile=dockerfile.resolve(), context=context.resolve(), args=args, target=target)


def _project_tag(build: DockerfileBuild) -> str:
    """One tag per project (its context and Dockerfile), rebuilt in place, so images do not pile up."""
    key = hashlib.sha256(f"{build.context}\0{build.dockerfile}\0{build.target or ''}".encode()).hexdigest()[:12]
    return f"{PROJECT_REPOSITORY}-{key}:latest"


# --- JSON with comments -------------------------------------------------------------------------------------


def _load_jsonc(text: str, path: Path) -> Any:
    """json.loads after blanking comments and trailing commas: line and column numbers stay right."""
    try:
        return json.loads(strip_jsonc(text))
    except ValueError as exc:
        raise DevcontainerError(f"{path}: not valid JSON ({exc})") from None


def strip_jsonc(text: str) -> str:
    """`//` and `/* */` comments and trailing commas replaced by spaces, outside strings."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                line = text.count("\n", 0, i) + 1
                raise ValueError(f"unterminated /* comment: line {line} column {i - text.rfind(chr(10), 0, i)}")
            out.append(re.sub(r"[^\n]", " ", text[i : end + 2]))
            i = end + 2
        else:
            out.append(char)
            i += 1
    return _blank_trailing_commas("".join(out))


def _blank_trailing_commas(text: str) -> str:
    chars = list(text)
    i, n = 0, len(chars)
    while i < n:
        char = chars[i]
        if char == '"':
            i += 1
            while i < n and chars[i] != '"' and chars[i] != "\n":
                i += 2 if chars[i] == "\\" else 1
        elif char == ",":
            j = i + 1
            while j < n and chars[j] in " \t\r\n":
                j += 1
            if j < n and chars[j] in "}]":
                chars[i] = " "
        i += 1
    return "".join(chars)


# --- the Docker step ----------------------------------------------------------------------------------------


def resolve_image(
    config: SandboxConfig,
    client: DockerClient,
    progress: Progress,
    *,
    rebuild: bool = False,
    network: str = "none",
) -> ResolvedImage:
    """Make config.image exist locally (building it when the config has a Dockerfile) and say which it is.

    Nothing is ever pulled. `network` is the build's network ("none" by default: a RUN step that downloads
    needs "host" or "default"); `rebuild` ignores the build's cache. Errors are one-line ImageErrors.
    """
    started = time.monotonic()
    if config.build is not None:
        image, built = _build_project(config, config.build, client, progress, rebuild=rebuild, network=network)
    else:
        found = local_image(client, config.image)
        if found is None:
            raise ImageError(_missing_image_text(config.image))
        image, built = found, False
    labels = image.labels or {}
    version = labels.get(LABEL_VERSION)
    if not config.byo and not version:
        raise ImageError(
            f"image {config.image} is not built FROM aileron/sandbox-base (it has no {LABEL_VERSION} label): "
            "name it in customizations.aileron.image to use it as a bring-your-own image"
        )
    return ResolvedImage(
        ref=config.image,
        image_id=str(image.id),
        built=built,
        seconds=time.monotonic() - started,
        aileron_version=str(version) if version else None,
    )


def _missing_image_text(ref: str) -> str:
    if ref.startswith("aileron/sandbox-base:"):
        return f"{ref} is not built yet: run `aileron sandbox build-base`"
    return f"image {ref} is not available locally (aileron never pulls images): pull, build or load it first"


def _build_project(
    config: SandboxConfig,
    build: DockerfileBuild,
    client: DockerClient,
    progress: Progress,
    *,
    rebuild: bool,
    network: str,
) -> tuple[Any, bool]:
    dockerfile_text = build.dockerfile.read_text(encoding="utf-8")
    bases = dockerfile_bases(dockerfile_text, dict(build.args))
    base_ids = []
    for ref in bases:
        found = local_image(client, ref)
        if found is None:
            raise ImageError(f"{build.dockerfile.name} is FROM {ref}: {_missing_image_text(ref)}")
        base_ids.append(str(found.id))
    digest = _build_digest(build, dockerfile_text, base_ids)
    existing = local_image(client, config.image)
    if existing is not None and not rebuild and (existing.labels or {}).get(LABEL_BUILD_DIGEST) == digest:
        progress(f"{config.image} is up to date")
        return existing, False
    progress(f"building {config.image} from {build.dockerfile} (network: {network})")
    docker_build(
        client,
        context=build.context,
        tag=config.image,
        progress=progress,
        dockerfile=str(build.dockerfile),
        buildargs=dict(build.args),
        target=build.target,
        labels={LABEL_BUILD_DIGEST: digest},
        network=network,
        nocache=rebuild,
    )
    built = client.images.get(config.image)
    if existing is not None and existing.id != built.id:
        remove_untagged(client, str(existing.id))
    return built, True


def dockerfile_bases(text: str, args: Mapping[str, str]) -> list[str]:
    """The images a Dockerfile's FROM lines name, with ARG defaults and build args substituted; stage names
    and `scratch` left out, and references still holding a variable left out (the build reports those)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):  # also inside a continued instruction, as Docker reads it
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    values: dict[str, str] = {}
    stages: set[str] = set()
    bases: list[str] = []
    seen_from = False
    for line in logical:
        words = line.split()
        instruction = words[0].upper() if words else ""
        if instruction == "ARG" and not seen_from and len(words) > 1:
            name, has_default, default = words[1].partition("=")
            if name in args:
                values[name] = args[name]
            elif has_default:
                values[name] = default.strip("\"'")
        elif instruction == "FROM":
            seen_from = True
            rest = [w for w in words[1:] if not w.startswith("--")]
            if not rest:
                continue
            ref = re.sub(
                r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                lambda m: values.get(m.group(1), m.group(0)),
                rest[0],
            )
            if ref.lower() != "scratch" and ref.lower() not in stages and "$" not in ref and ref not in bases:
                bases.append(ref)
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2].lower())
    return bases


def _build_digest(build: DockerfileBuild, dockerfile_text: str, base_ids: list[str]) -> str:
    """What a build depends on: the Dockerfile, its args and target, the FROM images, and the context's files
    (those .dockerignore lets through, by path, size, mode and modification time)."""
    from docker.utils.build import exclude_paths

    ignore = build.context / ".dockerignore"
    patterns = []
    if ignore.is_file():
        patterns = [p.strip() for p in ignore.read_text(encoding="utf-8").splitlines() if p.strip()]
        patterns = [p for p in patterns if not p.startswith("#")]
    digest = hashlib.sha256()
    digest.update(dockerfile_text.encode())
    digest.update(json.dumps([list(build.args), build.target, base_ids]).encode())
    for relative in sorted(exclude_paths(str(build.context), patterns)):
        path = build.context / relative
        try:
            info = path.lstat()
        except OSError:
            continue
        digest.update(f"{relative}\0{info.st_size}\0{info.st_mode}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# --- scaffolding --------------------------------------------------------------------------------------------

TEMPLATES = Path(__file__).resolve().parent / "templates"
SCAFFOLD = ("devcontainer.json", "Dockerfile")


def scaffold(project: Path, *, force: bool = False, version: str | None = None) -> list[Path]:
    """Write .devcontainer/devcontainer.json and .devcontainer/Dockerfile (FROM the base image of `version`)
    into `project`; an existing file is an error unless `force`. Returns the files written."""
    from runtime.sandbox.agents import AGENTS
    from runtime.sandbox.image import aileron_version

    folder = project / ".devcontainer"
    targets = [folder / name for name in SCAFFOLD]
    if not force:
        for target in targets:
            if target.exists():
                raise DevcontainerError(f"{target} already exists: --force overwrites it")
    texts = []
    for name in SCAFFOLD:
        try:
            template = (TEMPLATES / name).read_text(encoding="utf-8")
        except OSError as exc:
            raise DevcontainerError(f"the {name} template is missing from this aileron install ({exc})") from None
        text = template.replace("{{AILERON_VERSION}}", version or aileron_version())
        for agent in AGENTS.values():  # the agents' pinned versions, as `build-base --with` installs them
            text = text.replace("{{%s_VERSION}}" % agent.name.upper().replace("-", "_"), agent.version)  # noqa: UP031
        texts.append(text)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, text in zip(targets, texts, strict=True):
            target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DevcontainerError(f"cannot write {folder}: {exc.strerror or exc}") from None
    return targets
