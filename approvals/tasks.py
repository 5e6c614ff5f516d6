"""Periodic approval work (thin: the service does it)."""

from __future__ import annotations

from celery import shared_task

from approvals import services


@shared_task(name="approvals.tasks.approvals_expire", ignore_result=True, expires=30)
def approvals_expire() -> int:
    """Expire pending approvals nobody decided in time and grants nobody used in time."""
    return services.approvals_expire_due()
