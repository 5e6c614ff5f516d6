#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aileron_site.settings")
    from django.core.management import execute_from_command_line

    from aileron_site.config import ConfigError

    try:
        execute_from_command_line(sys.argv)
    except ConfigError as exc:
        sys.exit(f"aileron: configuration error: {exc}")


if __name__ == "__main__":
    main()
