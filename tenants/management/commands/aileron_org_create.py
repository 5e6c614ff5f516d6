"""Operator bootstrap: create an organization and its first owner where self-service signup is closed."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aileron_site.problems import Problem
from tenants.services import signup


class Command(BaseCommand):
    help = "Create an organization with its first owner and print the owner's personal access token once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="Organization name.")
        parser.add_argument("--owner-email", required=True, help="Email of the first owner (a new user).")
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            onboarded = signup(organization_name=options["name"], email=options["owner_email"])
        except Problem as exc:
            raise CommandError(exc.detail) from None
        assert onboarded.issued is not None  # noqa: S101  (signup always issues the owner's first token)
        result: dict[str, Any] = {
            "organization": {"id": str(onboarded.organization.pk), "slug": onboarded.organization.slug},
            "owner": onboarded.user.email,
            "token": onboarded.issued.plaintext,
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(f"Created {result['organization']['slug']} owned by {result['owner']}.")
            self.stdout.write(f"Give the owner this token (shown once): {result['token']}")
