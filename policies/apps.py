"""App config for policies (the control plane's side; the engine itself is pure: policies.engine)."""

from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    default_auto_field = "django.db.models.BigAutoField"
