"""The ``openmaas`` command: a thin layer over the server (serve, init) and the client.

Each module registers its commands on the root group of ``_base``; importing them here is
what makes them part of the command.
"""

from __future__ import annotations

import os
import sys

import click
import httpx

from openmaas.cli import accounts, explain, models, security, server
from openmaas.cli._base import cli
from openmaas.client import DEFAULT_URL
from openmaas.errors import OpenMaaSError

__all__ = ["cli", "main"]
_COMMAND_MODULES = (accounts, explain, models, security, server)


def main() -> None:
    """Entry point: turn known errors into one clear line and a non-zero exit."""
    try:
        outcome = cli(standalone_mode=False)  # a command's Exit(n) comes back as n
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except OpenMaaSError as exc:
        click.echo(f"error ({exc.code}): {exc.detail}", err=True)
        sys.exit(1)
    except httpx.TransportError as exc:
        click.echo(
            f"error: cannot reach the server ({exc}); is 'openmaas serve' running at "
            f"{os.environ.get('OPENMAAS_URL', DEFAULT_URL)}?",
            err=True,
        )
        sys.exit(2)
    if isinstance(outcome, int) and outcome:
        sys.exit(outcome)
