"""Settings from the environment: safe embedded defaults, and production refuses insecure values."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from aileron_site.config import ConfigError, load

STRONG = "k" * 20 + "abcdefghijklmnopqrstuvwxyz0123456789"


def prod(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "AILERON_MODE": "production",
        "AILERON_HOME": str(tmp_path),
        "AILERON_SECRET_KEY": STRONG,
        "AILERON_ALLOWED_HOSTS": "aileron.example.com",
    }
    env.update(extra)
    return env


def test_embedded_default_needs_nothing_and_keeps_a_private_secret_key(tmp_path: Path) -> None:
    config = load({"AILERON_HOME": str(tmp_path / "home")})
    assert config.mode == "embedded" and config.database_url is None and config.redis_url is None
    key_file = tmp_path / "home" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text() == config.secret_key
    assert load({"AILERON_HOME": str(tmp_path / "home")}).secret_key == config.secret_key
    assert "*" not in config.allowed_hosts and config.open_signup


def test_production_accepts_a_complete_secure_configuration(tmp_path: Path) -> None:
    config = load(prod(tmp_path))
    assert config.is_production and not config.open_signup and config.ssl_redirect


@pytest.mark.parametrize(
    "change,message",
    [
        ({"AILERON_DEBUG": "true"}, "AILERON_DEBUG"),
        ({"AILERON_SECRET_KEY": ""}, "AILERON_SECRET_KEY"),
        ({"AILERON_SECRET_KEY": "short"}, "too weak"),
        ({"AILERON_SECRET_KEY": "a" * 60}, "too weak"),
        ({"AILERON_ALLOWED_HOSTS": ""}, "AILERON_ALLOWED_HOSTS"),
        ({"AILERON_ALLOWED_HOSTS": "*"}, "wildcards"),
        ({"AILERON_ALLOWED_HOSTS": "ok.example.com,*.example.com"}, "wildcards"),
        ({"AILERON_DEBUG": "maybe"}, "not a boolean"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"AILERON_MODE": "yolo"}, "AILERON_MODE"),
        ({"AILERON_APPROVAL_TTL_SECONDS": "soon"}, "AILERON_APPROVAL_TTL_SECONDS"),
        ({"AILERON_APPROVAL_TTL_SECONDS": "1"}, "from 5 to"),
        ({"AILERON_APPROVAL_GRANT_TTL_SECONDS": "-3"}, "AILERON_APPROVAL_GRANT_TTL_SECONDS"),
        ({"AILERON_PUBLIC_URL": "ftp://aileron.example.com"}, "AILERON_PUBLIC_URL"),
        ({"AILERON_PUBLIC_URL": "https://u:p@aileron.example.com"}, "credentials"),
        ({"AILERON_EMAIL_PORT": "smtp"}, "AILERON_EMAIL_PORT"),
        ({"AILERON_EMAIL_USE_TLS": "true", "AILERON_EMAIL_USE_SSL": "true"}, "not both"),
        ({"AILERON_EMAIL_FROM": "nobody"}, "AILERON_EMAIL_FROM"),
        ({"AILERON_NOTIFY_ALLOW_PRIVATE": "sometimes"}, "not a boolean"),
    ],
)
def test_production_refuses_insecure_or_invalid_values(tmp_path: Path, change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(prod(tmp_path, **change))


def test_notification_settings_have_safe_defaults_and_read_the_environment(tmp_path: Path) -> None:
    embedded = load({"AILERON_HOME": str(tmp_path / "home")})
    assert embedded.notify_allow_private and embedded.public_url == ""
    assert (embedded.email.host, embedded.email.port, embedded.email.sender) == ("localhost", 25, "aileron@localhost")
    password = tmp_path / "smtp-password"
    password.write_text("s3cret\n")
    config = load(
        prod(
            tmp_path,
            AILERON_PUBLIC_URL="https://aileron.example.com/",
            AILERON_EMAIL_HOST="smtp.example.com",
            AILERON_EMAIL_USE_SSL="true",
            AILERON_EMAIL_USER="aileron",
            AILERON_EMAIL_PASSWORD_FILE=str(password),
            AILERON_EMAIL_FROM="approvals@example.com",
        )
    )
    assert config.public_url == "https://aileron.example.com" and not config.notify_allow_private
    assert (config.email.host, config.email.port, config.email.use_ssl) == ("smtp.example.com", 465, True)
    assert (config.email.user, config.email.password, config.email.sender) == (
        "aileron",
        "s3cret",
        "approvals@example.com",
    )


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(STRONG + "\n")
    env = prod(tmp_path)
    del env["AILERON_SECRET_KEY"]
    env["AILERON_SECRET_KEY_FILE"] = str(secret)
    assert load(env).secret_key == STRONG
    env["AILERON_SECRET_KEY_FILE"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot read"):
        load(env)


def test_a_bad_setting_stops_manage_py_with_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        **prod(tmp_path, AILERON_DEBUG="true"),
        "DJANGO_SETTINGS_MODULE": "aileron_site.settings",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "aileron: configuration error: AILERON_DEBUG must be off in production mode"
