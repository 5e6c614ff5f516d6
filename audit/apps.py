"""App config for audit: the control plane's record of every request an agent made through the data plane."""

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"
