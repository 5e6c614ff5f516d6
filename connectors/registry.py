"""Which connectors are installed: built-in ones, Python distributions, and folders under AILERON_HOME.

Sources, later ones overriding earlier ones of the same name: the built-ins in `connectors/builtin/`, the
entry-point group `aileron.connectors` (each entry point names a package folder, or a callable returning
one), `AILERON_HOME/connectors/*/` (what `aileron connector install` and `import` write), and in a sandbox
`AILERON_CONNECTOR_DIR/*/` (the launching user's, copied in by `aileron launch`). Pure.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from connectors.conflicts import clash_message, clashes
from connectors.matcher import Router, normalize_host
from connectors.package import Connector, ConnectorError, load

BUILTIN = Path(__file__).resolve().parent / "builtin"
ENTRY_POINT_GROUP = "aileron.connectors"


def _entry_point_folders() -> list[Path]:
    folders = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        target: Any = ep.load()
        folders.append(Path(target() if callable(target) else target))
    return folders


def _packages(root: Path) -> list[Path]:
    """Package folders under ROOT; hidden ones are copies being installed, not installed yet."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p / "connector.toml").exists())


def connector_folders(home: Path, extra: str | None = None) -> list[Path]:
    """`extra` (AILERON_CONNECTOR_DIR when not given) is one more folder of packages, last: a sandbox's copies of
    the launching user's connectors."""
    if extra is None:
        extra = os.environ.get("AILERON_CONNECTOR_DIR", "")
    builtin = _packages(BUILTIN)
    return [
        *builtin,
        *_entry_point_folders(),
        *_packages(home / "connectors"),
        *(_packages(Path(extra)) if extra else []),
    ]


def _by_name(home: Path) -> list[Connector]:
    by_name: dict[str, Connector] = {}
    for folder in connector_folders(home):
        connector = load(folder)
        by_name[connector.name] = connector
    return sorted(by_name.values(), key=lambda c: c.name)


def installed(home: Path) -> list[Connector]:
    """The installed connectors by name; ConnectorError if two of them serve one host (see connectors.conflicts)."""
    found = _by_name(home)
    by_host: dict[str, Connector] = {}
    for connector in found:
        for host in connector.hosts:
            other = by_host.setdefault(normalize_host(host), connector)
            if other is not connector:
                raise ConnectorError(
                    f"{host} is served by two connectors, {other.name} ({where(other)}) and {connector.name} "
                    f"({where(connector)}): remove one, or make one package of both"
                )
    return found


def is_builtin(connector: Connector) -> bool:
    return connector.folder is not None and connector.folder.resolve().is_relative_to(BUILTIN)


def where(connector: Connector) -> str:
    """Where an installed connector comes from, for messages."""
    return "built in" if is_builtin(connector) else f"installed at {connector.folder}"


def package_files(folder: Path) -> list[Path]:
    """The files a package is made of: connector.toml and the description it names, nothing else the folder
    happens to hold (it is copied whole by `install`, and into sandboxes by `aileron launch`)."""
    meta = tomllib.loads((folder / "connector.toml").read_text(encoding="utf-8"))
    named = [meta[key] for key in ("spec", "graphql_schema") if isinstance(meta.get(key), str)]
    return [folder / "connector.toml", *(folder / name for name in named)]


def router(connectors: list[Connector]) -> Router:
    try:
        return Router(route for c in connectors for route in c.routes)
    except ValueError as exc:
        raise ConnectorError(f"two installed connectors claim the same operation: {exc}") from None


def manifest(connectors: list[Connector]) -> dict[str, Any]:
    """The actions manifest an agent reads at /etc/aileron/actions.json."""
    return {
        "version": 1,
        "connectors": [
            {"name": c.name, "description": c.description, "hosts": list(c.hosts), "shim": c.name} for c in connectors
        ],
        "actions": [a.manifest_entry() for c in connectors for a in c.actions],
    }


def install(source: Path, home: Path) -> Connector:
    """Validate a package folder, then copy it to AILERON_HOME/connectors/<name> (replacing an older copy).

    Refused when it would share a host with another installed connector (connectors.conflicts): replacing one
    means installing a package of the same name."""
    connector = load(source)
    refused = clashes(connector, _by_name(home))  # not installed(): installing may mend a home that clashes
    if refused:
        raise ConnectorError(clash_message(connector, refused[0], other_where=where(refused[0].other)))
    target = home / "connectors" / connector.name
    staging = home / "connectors" / f".{connector.name}.installing"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    load(staging)  # what was copied is still valid
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return load(target)


def import_openapi(
    spec_file: Path,
    *,
    home: Path,
    name: str,
    hosts: list[str],
    auth: str,
    auth_name: str | None = None,
    placeholder: str = "aileron",
) -> Connector:
    """Make a connector exposing every operation of an OpenAPI description (JSON), and install it."""
    import json
    import tomllib

    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConnectorError(f"{spec_file}: cannot read it as JSON ({exc})") from None
    lines = [
        f"name = {json.dumps(name)}",
        f"description = {json.dumps(str(spec.get('info', {}).get('title', name)))}",
        f"hosts = {json.dumps(hosts)}",
        'spec = "openapi.json"',
        'actions = "all"',
        "",
        "[auth]",
        f"scheme = {json.dumps(auth)}",
        f"placeholder = {json.dumps(placeholder)}",
    ]
    if auth_name:
        lines.append(f"name = {json.dumps(auth_name)}")
    meta_text = "\n".join(lines) + "\n"
    tomllib.loads(meta_text)
    staging = home / "connectors" / f".{name}.importing"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        (staging / "connector.toml").write_text(meta_text, encoding="utf-8")
        shutil.copyfile(spec_file, staging / "openapi.json")
        return install(staging, home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
