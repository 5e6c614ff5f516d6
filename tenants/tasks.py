"""Celery tasks of tenants: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from tenants.services import tokens_purge_expired


@shared_task(name="tenants.tasks.tokens_purge_expired", ignore_result=True)
def tokens_purge_expired_task() -> int:
    return tokens_purge_expired()
