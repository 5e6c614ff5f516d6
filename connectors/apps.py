"""App config for connectors (the control plane's side: which teams may use which connector)."""

from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    default_auto_field = "django.db.models.BigAutoField"
