"""Approval work for the worker (thin: the services do it)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from approvals import notifications, services


@shared_task(name="approvals.tasks.approvals_expire", ignore_result=True, expires=30)
def approvals_expire() -> int:
    """Expire pending approvals nobody decided in time and grants nobody used in time."""
    return services.approvals_expire_due()


@shared_task(bind=True, name="approvals.tasks.notification_deliver", ignore_result=True, max_retries=None)
def notification_deliver_task(
    self: Any,
    *,
    channel_id: str,
    event: str,
    delivery_id: str,
    approval_id: str | None = None,
    recipients: list[str] | None = None,
    attempt: int = 0,
    about: dict[str, Any] | None = None,
) -> str:
    """Deliver one approval event to one channel; on a retryable failure, try again later (the service says
    when and to whom: notifications.MAX_ATTEMPTS bounds it)."""
    outcome = notifications.notification_deliver(
        channel_id=channel_id,
        event=event,
        delivery_id=delivery_id,
        approval_id=approval_id,
        recipients=recipients,
        attempt=attempt,
        about=about,
    )
    if outcome.retry_in is not None:
        kwargs = {
            "channel_id": channel_id,
            "event": event,
            "delivery_id": delivery_id,  # the same id on every retry: receivers dedupe on it
            "approval_id": approval_id,
            "recipients": outcome.remaining,
            "attempt": attempt + 1,
            "about": about,
        }
        raise self.retry(kwargs=kwargs, countdown=outcome.retry_in)
    return outcome.status
