"""The ``openmaas`` command: a thin layer over the server (serve, init) and the client."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np

from openmaas.client import DEFAULT_URL, Client
from openmaas.errors import OpenMaaSError

__all__ = ["main"]


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


# -- server ---------------------------------------------------------------------------------


def _settings(data_dir: Path | None, **overrides: Any) -> Any:
    from openmaas.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def _report_init(result: Any) -> None:
    if result.admin_key:
        click.echo("Created tenant 'admin'. Its owner API key (shown once, also kept 0600 in")
        click.echo(f"{result.admin_key_file}):\n\n    {result.admin_key}\n")
        click.echo(f"    export OPENMAAS_API_KEY={result.admin_key}\n")
        for model in result.demo_models:
            click.echo(f"Published demo model {model}")
    else:
        click.echo(f"Data directory already initialised; admin key in {result.admin_key_file}")


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory.")
def init(data_dir: Path | None) -> None:
    """Create the data directory, the admin tenant and its key, and the demo models."""
    from openmaas.bootstrap import build_services, initialize

    services = build_services(_settings(data_dir))
    try:
        _report_init(initialize(services))
    finally:
        services.db.close()


@cli.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory.")
def serve(host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Start the server (initialising the data directory on first start)."""
    import uvicorn

    from openmaas.app import create_app
    from openmaas.bootstrap import build_services, initialize

    settings = _settings(data_dir, host=host, port=port)
    services = build_services(settings)
    _report_init(initialize(services))
    app = create_app(settings, services)
    click.echo(f"Serving on http://{settings.host}:{settings.port} (docs at /docs)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


@cli.command()
@pass_ctx
def whoami(ctx: _Context) -> None:
    """Show the tenant, role and scopes of the API key."""
    with ctx.client() as client:
        _echo_json(client.whoami())


# -- models ---------------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """Publish, list and inspect models."""


@models.command("publish")
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name in your tenant, e.g. fraud.")
@click.option("--alias", default=None, help="Also point this alias (e.g. prod) at it.")
@click.option("--visibility", type=click.Choice(["private", "public"]), default=None)
@click.option("--description", default=None, help="One paragraph for the model card.")
@pass_ctx
def models_publish(
    ctx: _Context,
    artifact: Path,
    name: str,
    alias: str | None,
    visibility: str | None,
    description: str | None,
) -> None:
    """Publish ARTIFACT (an .onnx file) as the next version of model NAME."""
    with ctx.client() as client:
        info = client.publish(
            artifact, name, alias=alias, visibility=visibility, description=description
        )
    click.echo(f"Published {info['model']} version {info['version']} (sha256 {info['sha256']})")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def models_list(ctx: _Context, as_json: bool) -> None:
    """List your models and every public model."""
    with ctx.client() as client:
        rows = client.list_models()
    if as_json:
        _echo_json(rows)
        return
    click.echo(f"{'MODEL':40} {'LATEST':>6}  VISIBILITY")
    for row in rows:
        latest = row["latest_version"] or "-"
        click.echo(f"{row['id']:40} {latest:>6}  {row['visibility']}")


@models.command("show")
@click.argument("model")
@pass_ctx
def models_show(ctx: _Context, model: str) -> None:
    """Show MODEL (tenant/name): versions, aliases, signature and card."""
    with ctx.client() as client:
        _echo_json(client.get_model(model))


@models.command("alias")
@click.argument("model")
@click.argument("alias")
@click.argument("version", type=int)
@pass_ctx
def models_alias(ctx: _Context, model: str, alias: str, version: int) -> None:
    """Point ALIAS of MODEL at VERSION."""
    with ctx.client() as client:
        detail = client.set_alias(model, alias, version)
    click.echo(f"{detail['summary']['id']}: {alias} -> version {version}")


@models.command("update")
@click.argument("model")
@click.option("--visibility", type=click.Choice(["private", "public"]), default=None)
@click.option("--description", default=None)
@pass_ctx
def models_update(
    ctx: _Context, model: str, visibility: str | None, description: str | None
) -> None:
    """Change the visibility or description of MODEL."""
    with ctx.client() as client:
        _echo_json(client.update_model(model, visibility=visibility, description=description))


# -- inference ------------------------------------------------------------------------------


def _read_inputs(text: str) -> dict[str, Any]:
    source = text[1:] if text.startswith("@") else text
    path = Path(source)
    if text.startswith("@") or (not text.lstrip().startswith("{") and path.is_file()):
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg}); pass '{{\"input\": [[...]]}}'") from exc
    if not isinstance(value, dict):
        raise click.BadParameter('pass an object of named inputs: {"float_input": [[...]]}')
    return value


@cli.command()
@click.argument("model")
@click.option(
    "--input",
    "input_text",
    required=True,
    help='Inputs as JSON ({"name": [[...]]}), or a JSON file path (or @path).',
)
@click.option("--version", default=None, help="Version number or alias (default latest).")
@click.option("--output", "outputs", multiple=True, help="Only return these outputs.")
@pass_ctx
def infer(
    ctx: _Context, model: str, input_text: str, version: str | None, outputs: tuple[str, ...]
) -> None:
    """Run MODEL on the given inputs and print its outputs as JSON."""
    inputs = _read_inputs(input_text)
    with ctx.client() as client:
        result = client.infer(model, inputs, version=version, outputs=list(outputs) or None)
    _echo_json({name: _jsonable(array) for name, array in result.items()})


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.flat]
    return array.tolist()


# -- tenants and keys -----------------------------------------------------------------------


@cli.group()
def tenants() -> None:
    """Create and list tenants (platform admins)."""


@tenants.command("create")
@click.argument("name")
@pass_ctx
def tenants_create(ctx: _Context, name: str) -> None:
    """Create tenant NAME and print its owner key (shown once)."""
    with ctx.client() as client:
        created = client.create_tenant(name)
    click.echo(f"Created tenant {created['tenant']['name']}. Owner API key (shown once):")
    click.echo(created["api_key"])


@tenants.command("list")
@pass_ctx
def tenants_list(ctx: _Context) -> None:
    """List tenants."""
    with ctx.client() as client:
        for tenant in client.list_tenants():
            click.echo(tenant["name"])


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys of your tenant."""


def _parse_expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)([hd])", text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        delta = timedelta(hours=amount) if unit == "h" else timedelta(days=amount)
        return datetime.now(UTC) + delta
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter("use a duration like 30d or 12h, or an ISO date") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@keys.command("create")
@click.option(
    "--role",
    type=click.Choice(["owner", "admin", "publisher", "consumer", "viewer"]),
    default="consumer",
    show_default=True,
)
@click.option("--name", default="", help="A label for the key.")
@click.option("--expires", default=None, help="Expiry: a duration (30d, 12h) or an ISO date.")
@pass_ctx
def keys_create(ctx: _Context, role: str, name: str, expires: str | None) -> None:
    """Create an API key and print it (shown once)."""
    with ctx.client() as client:
        created = client.create_key(role=role, name=name, expires_at=_parse_expiry(expires))
    key = created["key"]
    click.echo(f"Created key {key['key_id']} (role {key['role']}). API key (shown once):")
    click.echo(created["api_key"])


@keys.command("list")
@pass_ctx
def keys_list(ctx: _Context) -> None:
    """List the keys of your tenant."""
    with ctx.client() as client:
        rows = client.list_keys()
    click.echo(f"{'KEY ID':14} {'ROLE':10} {'STATUS':8} {'EXPIRES':26} NAME")
    for row in rows:
        status = "revoked" if row["revoked_at"] else "active"
        expires = row["expires_at"] or "never"
        click.echo(f"{row['key_id']:14} {row['role']:10} {status:8} {expires:26} {row['name']}")


@keys.command("revoke")
@click.argument("key_id")
@pass_ctx
def keys_revoke(ctx: _Context, key_id: str) -> None:
    """Revoke KEY_ID; it stops working on its next request."""
    with ctx.client() as client:
        client.revoke_key(key_id)
    click.echo(f"Revoked key {key_id}")


def main() -> None:
    """Entry point: turn known errors into one clear line and a non-zero exit."""
    try:
        cli(standalone_mode=False)
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
