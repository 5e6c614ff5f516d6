"""Reads and validates Aileron's settings from the environment, before Django starts.

Pure: no Django import, so the CLI can report a bad value in one line and the tests can exercise every rule.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

EMBEDDED = "embedded"
PRODUCTION = "production"
MODES = (EMBEDDED, PRODUCTION)
VAULT_STORES = ("file", "database")
# Per client address (per person once signed in), per scope: generous for people, tight for a guessing script.
THROTTLE_DEFAULTS = {
    "signup": "20/hour",
    "invitation-accept": "30/hour",
    "token-create": "60/hour",
    "approval-link": "120/minute",
    # Walking a long audit chain costs the API seconds; signing a checkpoint writes a row.
    "audit-verify": "30/hour",
    "audit-checkpoint": "60/hour",
}
_RATE = re.compile(r"^[1-9][0-9]{0,6}/(second|minute|hour|day)$")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
MIN_SECRET_KEY_LENGTH = 50


class ConfigError(Exception):
    """A setting is missing or has a value Aileron refuses to run with."""


@dataclass(frozen=True, slots=True)
class EmailConfig:
    """How notification emails leave (Django's SMTP backend)."""

    host: str = "localhost"
    port: int = 25
    user: str = ""
    password: str = ""
    use_tls: bool = False
    use_ssl: bool = False
    sender: str = "aileron@localhost"
    timeout_seconds: int = 10


@dataclass(frozen=True, slots=True)
class Config:
    mode: str
    home: Path
    secret_key: str
    debug: bool
    allowed_hosts: tuple[str, ...]
    database_url: str | None
    redis_url: str | None
    open_signup: bool
    ssl_redirect: bool
    csrf_trusted_origins: tuple[str, ...]
    behind_tls_proxy: bool
    vault_store: str
    approval_ttl_seconds: int = 24 * 3600
    approval_grant_ttl_seconds: int = 3600
    # Where people reach this service (the links in notifications); empty: messages carry no link.
    public_url: str = ""
    email: EmailConfig = field(default_factory=lambda: EmailConfig())
    # Whether notification channels may call private addresses (loopback, RFC 1918, link-local, ...).
    notify_allow_private: bool = True
    # Requests per period for the endpoints that take secrets or make accounts (aileron_site.throttles).
    throttle_rates: dict[str, str] = field(default_factory=lambda: dict(THROTTLE_DEFAULTS))

    @property
    def is_production(self) -> bool:
        return self.mode == PRODUCTION

    @property
    def sqlite_path(self) -> Path:
        return self.home / "aileron.sqlite3"


def _read(env: Mapping[str, str], name: str) -> str | None:
    """Return NAME, or the contents of the file named by NAME_FILE (for container secrets)."""
    value = env.get(name)
    file_name = env.get(f"{name}_FILE")
    if value is not None and file_name is not None:
        raise ConfigError(f"set either {name} or {name}_FILE, not both")
    if file_name is not None:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_name}: cannot read it ({exc.strerror})") from None
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _seconds(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name}={raw!r} must be a whole number of seconds from {low} to {high}")
    return int(raw)


def _csv(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ConfigError(f"{name} must start with {' or '.join(s + '://' for s in schemes)}, got {value!r}")
    if not parts.hostname and not parts.path:
        raise ConfigError(f"{name}={value!r} names no host")
    return value


def _email(env: Mapping[str, str]) -> EmailConfig:
    use_tls = _bool(env, "AILERON_EMAIL_USE_TLS", default=False)
    use_ssl = _bool(env, "AILERON_EMAIL_USE_SSL", default=False)
    if use_tls and use_ssl:
        raise ConfigError("set AILERON_EMAIL_USE_TLS (STARTTLS) or AILERON_EMAIL_USE_SSL (implicit TLS), not both")
    port_raw = env.get("AILERON_EMAIL_PORT", "").strip()
    if port_raw and (not port_raw.isdigit() or not 1 <= int(port_raw) <= 65535):
        raise ConfigError(f"AILERON_EMAIL_PORT={port_raw!r} is not a port number")
    sender = env.get("AILERON_EMAIL_FROM", "").strip() or "aileron@localhost"
    if "@" not in sender or any(c in sender for c in "\r\n"):
        raise ConfigError(f"AILERON_EMAIL_FROM={sender!r} is not an email address")
    return EmailConfig(
        host=env.get("AILERON_EMAIL_HOST", "").strip() or "localhost",
        port=int(port_raw) if port_raw else (465 if use_ssl else 25),
        user=env.get("AILERON_EMAIL_USER", "").strip(),
        password=_read(env, "AILERON_EMAIL_PASSWORD") or "",
        use_tls=use_tls,
        use_ssl=use_ssl,
        sender=sender,
        timeout_seconds=_seconds(env, "AILERON_EMAIL_TIMEOUT_SECONDS", 10, low=1, high=120),
    )


def _public_url(env: Mapping[str, str]) -> str:
    raw = env.get("AILERON_PUBLIC_URL", "").strip().rstrip("/")
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"AILERON_PUBLIC_URL must be an http:// or https:// URL, got {raw!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("AILERON_PUBLIC_URL may not carry credentials, a query or a fragment")
    return raw


def _embedded_secret_key(home: Path) -> str:
    """Create once and reuse a random key in AILERON_HOME, readable only by its owner."""
    path = home / "secret_key"
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) >= MIN_SECRET_KEY_LENGTH:
        return existing
    key = secrets.token_urlsafe(64)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return key


def ensure_home(home: Path) -> None:
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"AILERON_HOME={home}: cannot create it ({exc.strerror})") from None


def _throttle_rates(env: Mapping[str, str]) -> dict[str, str]:
    """THROTTLE_DEFAULTS, each overridable as AILERON_THROTTLE_<SCOPE> (dashes as underscores), e.g. "5/minute"."""
    rates = dict(THROTTLE_DEFAULTS)
    for scope in rates:
        name = "AILERON_THROTTLE_" + scope.upper().replace("-", "_")
        value = env.get(name, "").strip()
        if value:
            if not _RATE.match(value):
                raise ConfigError(f"{name}={value!r} is not a rate like 20/hour (second, minute, hour or day)")
            rates[scope] = value
    return rates


def load(env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from ENV (default: os.environ), refusing unsafe production values."""
    env = os.environ if env is None else env
    mode = env.get("AILERON_MODE", EMBEDDED).strip().lower()
    if mode not in MODES:
        raise ConfigError(f"AILERON_MODE={mode!r} is not one of {', '.join(MODES)}")
    production = mode == PRODUCTION

    home = Path(env.get("AILERON_HOME") or Path.home() / ".aileron").expanduser()
    ensure_home(home)
    debug = _bool(env, "AILERON_DEBUG", default=False)

    database_url = _read(env, "DATABASE_URL") or None
    if database_url is not None:
        _check_url("DATABASE_URL", database_url, ("postgres", "postgresql"))
    redis_url = _read(env, "REDIS_URL") or None
    if redis_url is not None:
        _check_url("REDIS_URL", redis_url, ("redis", "rediss", "unix"))

    vault_store = env.get("AILERON_VAULT_STORE", "database" if database_url else "file").strip().lower()
    if vault_store not in VAULT_STORES:
        raise ConfigError(f"AILERON_VAULT_STORE={vault_store!r} is not one of {', '.join(VAULT_STORES)}")

    hosts_raw = env.get("AILERON_ALLOWED_HOSTS")
    allowed_hosts = _csv(hosts_raw) if hosts_raw is not None else ()
    secret_key = _read(env, "AILERON_SECRET_KEY") or ""

    if production:
        if debug:
            raise ConfigError("AILERON_DEBUG must be off in production mode")
        if not secret_key:
            raise ConfigError("AILERON_SECRET_KEY (or AILERON_SECRET_KEY_FILE) is required in production mode")
        if len(secret_key) < MIN_SECRET_KEY_LENGTH or len(set(secret_key)) < 5:
            raise ConfigError(f"AILERON_SECRET_KEY is too weak: use at least {MIN_SECRET_KEY_LENGTH} random characters")
        if not allowed_hosts:
            raise ConfigError("AILERON_ALLOWED_HOSTS is required in production mode (comma-separated host names)")
        if any(host == "*" or host.startswith("*") for host in allowed_hosts):
            raise ConfigError("AILERON_ALLOWED_HOSTS may not contain wildcards in production mode")
    else:
        if not secret_key:
            secret_key = _embedded_secret_key(home)
        if not allowed_hosts:
            allowed_hosts = ("localhost", "127.0.0.1", "[::1]")

    return Config(
        mode=mode,
        home=home,
        secret_key=secret_key,
        debug=debug,
        allowed_hosts=allowed_hosts,
        database_url=database_url,
        redis_url=redis_url,
        open_signup=_bool(env, "AILERON_OPEN_SIGNUP", default=not production),
        ssl_redirect=_bool(env, "AILERON_SSL_REDIRECT", default=production),
        csrf_trusted_origins=_csv(env.get("AILERON_CSRF_TRUSTED_ORIGINS")),
        behind_tls_proxy=_bool(env, "AILERON_BEHIND_TLS_PROXY", default=False),
        vault_store=vault_store,
        # How long a held request may wait for people (a night's run), and a grant for the agent's retry.
        approval_ttl_seconds=_seconds(env, "AILERON_APPROVAL_TTL_SECONDS", 24 * 3600, low=5, high=30 * 86400),
        approval_grant_ttl_seconds=_seconds(env, "AILERON_APPROVAL_GRANT_TTL_SECONDS", 3600, low=5, high=7 * 86400),
        public_url=_public_url(env),
        email=_email(env),
        # Channels are set up by organization admins and called from the worker: in production they may reach
        # only public addresses unless the operator says otherwise (an internal webhook receiver).
        notify_allow_private=_bool(env, "AILERON_NOTIFY_ALLOW_PRIVATE", default=not production),
        throttle_rates=_throttle_rates(env),
    )
