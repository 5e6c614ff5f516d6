"""Aileron's Django project: settings, URLs, the ASGI application and the Celery app."""

__version__ = "4.0.0.dev0"
