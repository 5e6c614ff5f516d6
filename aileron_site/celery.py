"""The Celery app: tasks take ids, reload rows and call a service (see STYLE.md)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aileron_site.settings")

app = Celery("aileron")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Periodic work is declared here, in code, and run by `celery beat` (the default file scheduler under
# AILERON_HOME). We do not use django-celery-beat: it would pin Django below 6.1 and nothing needs
# schedules edited at run time yet.
app.conf.beat_schedule = {
    "runtime-heartbeat": {"task": "runtime.tasks.heartbeat_record", "schedule": 5.0},
    "tokens-purge-expired": {"task": "tenants.tasks.tokens_purge_expired", "schedule": 3600.0},
    "vaults-rotations-drive": {"task": "vaults.tasks.rotations_drive", "schedule": 60.0},
    "vaults-confirmations-drive": {"task": "vaults.tasks.confirmations_drive", "schedule": 60.0},
    "vaults-credentials-due-warn": {"task": "vaults.tasks.credentials_due_warn", "schedule": 3600.0},
    "approvals-expire": {"task": "approvals.tasks.approvals_expire", "schedule": 15.0},
    "audit-checkpoints": {"task": "audit.tasks.checkpoints_make", "schedule": 600.0},
    "audit-retention": {"task": "audit.tasks.retention_apply", "schedule": 86400.0},
}
