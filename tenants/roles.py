"""Organization roles (no ORM import, so pure modules and the CLI can name them)."""

from django.db.models import TextChoices


class Role(TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    APPROVER = "approver", "Approver"
    MEMBER = "member", "Member"
    AUDITOR = "auditor", "Auditor"
