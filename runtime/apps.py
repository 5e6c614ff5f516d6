"""App config for runtime."""

from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "runtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Make our Celery app the current one in every Django process (API, worker, manage.py), so a task
        # queued from a view goes to the configured broker, not to Celery's built-in default.
        import aileron_site.celery  # noqa: F401
