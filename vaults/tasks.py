"""Celery tasks of vaults: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from vaults.services import confirmations_drive, credentials_due_warn, rotations_drive


@shared_task(name="vaults.tasks.rotations_drive", ignore_result=True)
def rotations_drive_task(vault_id: str | None = None) -> int:
    return rotations_drive(vault_id=vault_id)


@shared_task(name="vaults.tasks.confirmations_drive", ignore_result=True)
def confirmations_drive_task(vault_id: str | None = None) -> int:
    return confirmations_drive(vault_id=vault_id)


@shared_task(name="vaults.tasks.credentials_due_warn", ignore_result=True)
def credentials_due_warn_task() -> int:
    return credentials_due_warn()
