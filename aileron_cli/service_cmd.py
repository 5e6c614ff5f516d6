"""`aileron service` (the whole runtime in one process group) and `aileron dataplane` (the data plane alone)."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from aileron_cli.common import (
    console,
    err_console,
    fail_cleanly,
)
from aileron_site import __version__


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--api-port",
    default=8400,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port of the REST API (HTTP and websockets).",
)
@click.option(
    "--proxy-port",
    default=8480,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port of the data plane's HTTPS proxy (the agents' HTTPS_PROXY).",
)
@click.option(
    "--proxy-workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Proxy processes sharing the proxy port (the proxy scales with traffic; use about one per core).",
)
@click.option("--json", "as_json", is_flag=True, help="Print where each part listens as one JSON line.")
@fail_cleanly
def service(host: str, api_port: int, proxy_port: int, proxy_workers: int, as_json: bool) -> None:
    """Run the Aileron runtime: API server, worker, scheduler and data plane, in one process group."""
    from aileron_cli.service import run_service

    def summary(info: dict[str, str]) -> None:
        if as_json:
            click.echo(json.dumps({"version": __version__, **info}, sort_keys=True), nl=True)
            sys.stdout.flush()
            return
        table = Table(title=f"Aileron {__version__} is running", show_header=False, title_justify="left")
        for key, value in info.items():
            table.add_row(key, value)
        console.print(table)
        console.print("Press Ctrl-C to stop.")

    code = run_service(
        host=host,
        api_port=api_port,
        proxy_port=proxy_port,
        proxy_workers=proxy_workers,
        out=lambda m: err_console.print(m, markup=False),
        summary=summary,
    )
    sys.exit(code)


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.pass_context
def dataplane(ctx: click.Context) -> None:
    """Run the data plane alone (proxy, credential service, audit spool); `aileron dataplane --help` for flags."""
    from dataplane.server import main as dataplane_main

    sys.exit(dataplane_main(list(ctx.args)))
