"""The root command group, its context (URL and API key) and shared helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from openmaas.client import DEFAULT_URL, Client

__all__ = ["_Context", "_echo_json", "_settings", "cli", "pass_ctx"]


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


class _Context:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url
        self.api_key = api_key

    def client(self) -> Client:
        return Client(self.url, self._key())

    def _key(self) -> str | None:
        if self.api_key:
            return self.api_key
        # Convenience for a local server: the admin key file of the default data directory.
        key_file = Path(os.environ.get("OPENMAAS_DATA_DIR", "openmaas-data")) / "admin.key"
        if key_file.is_file():
            return key_file.read_text().strip()
        return None


pass_ctx = click.make_pass_decorator(_Context)


@click.group()
@click.option(
    "--url", envvar="OPENMAAS_URL", default=DEFAULT_URL, show_default=True, help="Server URL."
)
@click.option("--api-key", envvar="OPENMAAS_API_KEY", default=None, help="API key (om_...).")
@click.version_option(package_name="openmaas")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None) -> None:
    """OpenMaaS: publish trained models and serve them securely over standard APIs."""
    ctx.obj = _Context(url, api_key)


def _settings(data_dir: Path | None, **overrides: Any) -> Any:
    from openmaas.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)
