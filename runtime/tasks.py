"""Celery tasks of the runtime: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from runtime.services import WORKER, heartbeat_record


@shared_task(name="runtime.tasks.heartbeat_record", ignore_result=True, expires=30)
def heartbeat_task() -> None:
    heartbeat_record(component=WORKER)
