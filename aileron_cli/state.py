"""The CLI's local state under AILERON_HOME: which server, and the user's login (a personal access token).

Pure: no Django. Written atomically and readable only by its owner.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8400"
LOGIN_FILE = "cli.json"


def home() -> Path:
    return Path(os.environ.get("AILERON_HOME") or Path.home() / ".aileron").expanduser()


@dataclass(frozen=True, slots=True)
class Login:
    server: str
    token: str
    email: str
    organization_id: str | None = None


class StateError(Exception):
    """The local state is unreadable."""


def login_path() -> Path:
    return home() / LOGIN_FILE


def login_load() -> Login | None:
    path = login_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path} is unreadable ({exc}); move it away and run `aileron init` again") from None
    try:
        return Login(
            server=str(raw["server"]),
            token=str(raw["token"]),
            email=str(raw["email"]),
            organization_id=raw.get("organization_id"),
        )
    except (KeyError, TypeError):
        raise StateError(f"{path} is missing fields; move it away and run `aileron init` again") from None


def login_save(login: Login) -> Path:
    path = login_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(login), handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def login_forget() -> Path:
    """Remove the saved login (nothing if there is none); its path."""
    path = login_path()
    path.unlink(missing_ok=True)
    return path


def server_url(explicit: str | None) -> str:
    """--server, else AILERON_SERVER, else the logged-in server, else the local default."""
    if explicit:
        return explicit.rstrip("/")
    env = os.environ.get("AILERON_SERVER")
    if env:
        return env.rstrip("/")
    try:
        login = login_load()
    except StateError:
        login = None
    return (login.server if login else DEFAULT_SERVER).rstrip("/")
