"""Celery tasks of audit: thin wrappers over the chain's services."""

from __future__ import annotations

from celery import shared_task

from audit.chaining import checkpoints_make_due, retention_apply


@shared_task(name="audit.tasks.checkpoints_make", ignore_result=True)
def checkpoints_make_task() -> int:
    """Sign a checkpoint of every organization's audit chain that moved since its last one."""
    return checkpoints_make_due()


@shared_task(name="audit.tasks.retention_apply", ignore_result=True)
def retention_apply_task() -> int:
    """Prune the audit records older than each organization's retention (after a signed checkpoint)."""
    return retention_apply()
