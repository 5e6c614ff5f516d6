"""Entry point of the `aileron` command: the top-level group, with each command group from its own module."""

from __future__ import annotations

import click

from aileron_cli.account_cmd import init, invite, join, login, logout, status
from aileron_cli.approval_cmd import approval
from aileron_cli.audit_cmd import audit
from aileron_cli.connector_cmd import actions, connector
from aileron_cli.notify_cmd import notify
from aileron_cli.sandbox_cmd import sandbox
from aileron_cli.service_cmd import dataplane, service
from aileron_cli.session_cmd import launch, session, tcp
from aileron_cli.team_cmd import invitation, member, team
from aileron_cli.usage_cmd import usage
from aileron_cli.vault_cmd import secret, vault
from aileron_site import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aileron")
def cli() -> None:
    """Aileron: identity, policy, approvals, audit and a bounded sandbox for every AI agent."""


for command in (service, dataplane, init, join, status, login, logout, invite, team, member, invitation):
    cli.add_command(command)
for command in (vault, secret, session, tcp, launch):
    cli.add_command(command)
for command in (connector, actions, audit, usage, approval, notify, sandbox):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="aileron")


if __name__ == "__main__":
    main()
