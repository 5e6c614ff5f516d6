"""Django settings, derived from the validated environment in aileron_site.config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url

from aileron_site import config as aileron_config

CONFIG = aileron_config.load()

SECRET_KEY = CONFIG.secret_key
DEBUG = CONFIG.debug
ALLOWED_HOSTS = list(CONFIG.allowed_hosts)
CSRF_TRUSTED_ORIGINS = list(CONFIG.csrf_trusted_origins)
AILERON_MODE = CONFIG.mode
# HOST:PORT of the data plane's proxy as agents reach it (`aileron service` sets it; served by the health API).
AILERON_PUBLIC_PROXY = os.environ.get("AILERON_PUBLIC_PROXY", "")
AILERON_HOME = CONFIG.home
AILERON_OPEN_SIGNUP = CONFIG.open_signup
AILERON_VAULT_STORE = CONFIG.vault_store
AILERON_APPROVAL_TTL_SECONDS = CONFIG.approval_ttl_seconds
AILERON_APPROVAL_GRANT_TTL_SECONDS = CONFIG.approval_grant_ttl_seconds
# Notifications (approvals.notifications): where people reach this service (the links in messages), whether
# channels may call private addresses, and how emails leave (Django's SMTP backend).
AILERON_PUBLIC_URL = CONFIG.public_url
AILERON_NOTIFY_ALLOW_PRIVATE = CONFIG.notify_allow_private
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = CONFIG.email.host
EMAIL_PORT = CONFIG.email.port
EMAIL_HOST_USER = CONFIG.email.user
EMAIL_HOST_PASSWORD = CONFIG.email.password
EMAIL_USE_TLS = CONFIG.email.use_tls
EMAIL_USE_SSL = CONFIG.email.use_ssl
EMAIL_TIMEOUT = CONFIG.email.timeout_seconds
DEFAULT_FROM_EMAIL = CONFIG.email.sender
AILERON_VAULT_ROOT = CONFIG.home / "store" / "vaults"
# The credential service's local key channel (v4: one machine). See dataplane.keychannel.
AILERON_KEY_SOCKET = CONFIG.home / "run" / "credentials.sock"
# The Ed25519 key that signs audit checkpoints (audit.signing): made on first use; every API host of one
# installation must be given the same file.
AILERON_AUDIT_KEY_PATH = Path(os.environ.get("AILERON_AUDIT_KEY_FILE") or CONFIG.home / "audit-signing-key")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "tenants",
    "vaults",
    "connectors",
    "runtime",
    "audit",
    "policies",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "aileron_site.urls"
ASGI_APPLICATION = "aileron_site.asgi.application"
AUTH_USER_MODEL = "tenants.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

if CONFIG.database_url:
    # A connection pool (psycopg_pool): the ASGI server runs each request in a thread of its own, so
    # persistent connections were never reused and every API call paid a new PostgreSQL backend (measured by
    # bench/approval_bench.py: 5 connections and ~15 ms of a held request's release went to connecting).
    _db = dj_database_url.parse(CONFIG.database_url, conn_max_age=0)
    _db.setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 16, "timeout": 10}
    DATABASES: dict[str, Any] = {"default": _db}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(CONFIG.sqlite_path),
            "OPTIONS": {
                # WAL lets the API, the worker and the CLI read while one of them writes; IMMEDIATE makes a
                # writing transaction take the lock up front instead of failing with "database is locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A file, not the in-memory default, so the test database locks and waits like the real one.
            "TEST": {"NAME": str(CONFIG.home / "test.sqlite3")},
        }
    }

# The cache counts throttled requests (aileron_site.throttles): shared by every API process through Redis in the
# split topology; the embedded default has one API process, whose memory is enough.
CACHES: dict[str, dict[str, Any]] = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CONFIG.redis_url,
            "KEY_PREFIX": "aileron",
        }
        if CONFIG.redis_url
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

CHANNEL_LAYERS: dict[str, dict[str, Any]]
if CONFIG.redis_url:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, the same 5 s channels-redis blocks for in
            # BZPOPMIN: an idle websocket's receive then raised TimeoutError and dropped the socket. Give reads room.
            "CONFIG": {"hosts": [{"address": CONFIG.redis_url, "socket_timeout": 30, "socket_connect_timeout": 5}]},
        }
    }
    CELERY_BROKER_URL = CONFIG.redis_url
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # No broker to install: kombu's filesystem transport carries tasks from the API process to the worker
    # that `aileron service` starts, through a folder in AILERON_HOME.
    _broker_dir = CONFIG.home / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # kombu's default is ./control in the working folder
        "store_processed": False,
    }

CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(CONFIG.home / "celerybeat-schedule")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

STATIC_URL = "/static/"
STATIC_ROOT = CONFIG.home / "static"
STATIC_ROOT.mkdir(mode=0o700, exist_ok=True)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False

# A key rotation carries every credential of a vault (at most 500 x 16 KiB, base64): 16 MiB covers it.
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.api.permissions.IsUserToken"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["aileron_site.api.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "aileron_site.api.Pagination",
    "DEFAULT_FILTER_BACKENDS": [
        "aileron_site.api.ScopedFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "aileron_site.schema.AileronAutoSchema",
    "EXCEPTION_HANDLER": "aileron_site.problems.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_VERSIONING_CLASS": None,
    # Escape non-ASCII in JSON: an error that echoes a lone surrogate from the input must still encode.
    "UNICODE_JSON": False,
    # Only the views that name a throttle_scope are throttled (aileron_site.throttles), at these rates.
    "DEFAULT_THROTTLE_RATES": dict(CONFIG.throttle_rates),
    # Who a client is: its address, or the one the TLS proxy in front says (only then is X-Forwarded-For read;
    # otherwise a client would name itself anew on each request and never be throttled).
    "NUM_PROXIES": 1 if CONFIG.behind_tls_proxy else 0,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Aileron control plane API",
    "DESCRIPTION": (
        "Aileron's control plane: organizations, members, teams, projects, tokens, vaults (ciphertext only), "
        "connectors, policies, approvals, notifications and audit. Authenticate with `Authorization: Bearer "
        "ail_pat_…` (a personal token: `aileron init` stores one in AILERON_HOME/cli.json). Errors are RFC 9457 "
        "problem+json; lists are paginated (`limit`, `offset`)."
    ),
    "VERSION": "v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["aileron_site.schema.exclude_internal"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "aileron_site.schema.add_async_views",
    ],
    "TAGS": [
        {"name": name, "description": about}
        for name, about in (
            ("Organizations", "The tenant: your organizations, renaming and deleting one."),
            ("Sign-up", "Creating an organization with its first owner."),
            ("Members", "People in the organization, their roles, and invitations."),
            ("Teams", "Teams: who gets which connectors, and team vaults' members."),
            ("Projects", "Projects: attribution and their own TCP rules."),
            ("Tokens", "Personal access tokens, and who a token speaks for."),
            ("Sessions", "Agent sessions: their narrow tokens, and the key channel relayed to the data plane."),
            ("Vaults", "Vaults and credentials: ciphertext and wrappings only, never a plaintext value."),
            ("Connectors", "The installed connector catalog, enabled per team."),
            ("Policies", "Cedar policies, egress rules and the shell policy."),
            ("Approvals", "Held requests, approval rules and one-time approval links."),
            ("Notifications", "Where approvals and credential warnings are sent."),
            ("Audit", "Every request the agents made, attributed to its action."),
            ("Runtime", "Health of the service."),
        )
    ],
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "tenants.roles.Role.choices",
        "EgressModeEnum": "policies.models.EgressMode.choices",
        "ShellModeEnum": "policies.models.ShellMode.choices",
        "VaultRoleEnum": "vaults.store.VAULT_ROLES",
        "VaultTypeEnum": "vaults.store.VAULT_TYPES",
        "NotificationChannelKindEnum": "approvals.models.ChannelKind.choices",
        "ApprovalDecisionEnum": "approvals.models.DecisionKind.choices",
    },
}

# Tokens are stored as HMAC-SHA256 digests under a key derived from SECRET_KEY (see aileron_shared.tokens).
AILERON_TOKEN_DEFAULT_TTL_DAYS = {"pat": 90, "ses": 1, "svc": 365}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

if CONFIG.is_production:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = CONFIG.ssl_redirect
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = False
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    if CONFIG.behind_tls_proxy:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SILENCED_SYSTEM_CHECKS = [
        # HSTS preload is a one-way commitment for the operator's whole domain; we do not make it for them.
        "security.W021",
    ]
    if not CONFIG.ssl_redirect:
        SILENCED_SYSTEM_CHECKS.append("security.W008")
