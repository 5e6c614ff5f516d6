"""Mint a service token for a data-plane process (printed once; store it as the data plane's secret)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aileron_site.problems import Problem
from tenants.services import SERVICE_TOKEN_MAX_DAYS, service_token_create


class Command(BaseCommand):
    help = "Create a data-plane service token and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="dataplane", help="A label for the token.")
        parser.add_argument(
            "--expires-in-days",
            type=int,
            default=365,
            help=f"Lifetime in days (1 to {SERVICE_TOKEN_MAX_DAYS}).",
        )
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            issued = service_token_create(name=options["name"], expires_in_days=options["expires_in_days"])
        except Problem as exc:
            raise CommandError(exc.detail) from None
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "id": str(issued.token.pk),
                        "token": issued.plaintext,
                        "expires_at": issued.token.expires_at.isoformat(),
                    }
                )
            )
        else:
            self.stdout.write(issued.plaintext)
