"""The ``openmaas`` command: a thin layer over the server (serve, init) and the client."""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import sys
import time
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


def _check_tls(cert: Path | None, key: Path | None) -> bool:
    """Whether to serve HTTPS; refuse half a configuration or files that do not load."""
    if cert is None and key is None:
        return False
    if cert is None or key is None:
        raise click.UsageError(
            "HTTPS needs a certificate and its private key: pass --tls-cert and --tls-key "
            "together (or set both OPENMAAS_TLS_CERT and OPENMAAS_TLS_KEY)"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise click.UsageError(
            f"cannot serve HTTPS with certificate {cert} and key {key} ({exc}); give a PEM "
            "certificate (chain) and the PEM private key that matches it, unencrypted"
        ) from exc
    return True


@cli.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory.")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificate (chain): serve HTTPS. Needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM private key of --tls-cert.",
)
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Start the server (initialising the data directory on first start)."""
    import uvicorn

    from openmaas.app import create_app
    from openmaas.bootstrap import build_services, initialize

    settings = _settings(data_dir, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key)
    https = _check_tls(settings.tls_cert, settings.tls_key)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    services = build_services(settings)
    _report_init(initialize(services))
    app = create_app(settings, services)
    scheme = "https" if https else "http"
    docs = " (docs at /docs)" if settings.docs_enabled else ""
    click.echo(f"Serving on {scheme}://{settings.host}:{settings.port}{docs}")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # ours (openmaas.access) leaves query strings out of the logs
        ssl_certfile=str(settings.tls_cert) if https else None,
        ssl_keyfile=str(settings.tls_key) if https else None,
    )


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


def _parse_quota(text: str | None) -> int | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)(?:/day|/d)?", text)
    if not match or int(match.group(1)) < 1:
        raise click.BadParameter("write a daily quota like 1000/day")
    return int(match.group(1))


@models.command("share")
@click.argument("model")
@click.option("--with", "tenant", required=True, help="The tenant that may call the model.")
@click.option("--quota", default=None, help="Daily quota, e.g. 1000/day.")
@pass_ctx
def models_share(ctx: _Context, model: str, tenant: str, quota: str | None) -> None:
    """Let another tenant call MODEL."""
    with ctx.client() as client:
        grant = client.share(model, tenant, quota_per_day=_parse_quota(quota))
    limit = f" ({grant['quota_per_day']}/day)" if grant["quota_per_day"] else ""
    click.echo(f"Shared {grant['model']} with {grant['tenant']}{limit}")


@models.command("unshare")
@click.argument("model")
@click.option("--with", "tenant", required=True, help="The tenant to remove.")
@pass_ctx
def models_unshare(ctx: _Context, model: str, tenant: str) -> None:
    """Stop sharing MODEL with a tenant."""
    with ctx.client() as client:
        client.unshare(model, tenant)
    click.echo(f"{model} is no longer shared with {tenant}")


@models.command("grants")
@click.argument("model")
@pass_ctx
def models_grants(ctx: _Context, model: str) -> None:
    """List the tenants MODEL is shared with."""
    with ctx.client() as client:
        for grant in client.grants(model):
            quota = grant["quota_per_day"] or "unlimited"
            click.echo(f"{grant['tenant']:30} {quota}")


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


@keys.command("rotate")
@click.argument("key_id")
@click.option("--overlap", default="1h", show_default=True, help="How long the old key works.")
@pass_ctx
def keys_rotate(ctx: _Context, key_id: str, overlap: str) -> None:
    """Replace KEY_ID by a new key; the old one keeps working for the overlap."""
    seconds = int((_parse_expiry(overlap) or datetime.now(UTC)).timestamp() - time.time())
    with ctx.client() as client:
        created = client.rotate_key(key_id, overlap_seconds=max(0, seconds))
    click.echo(f"Rotated {key_id} -> {created['key']['key_id']}. New API key (shown once):")
    click.echo(created["api_key"])


@keys.command("rotate-root")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory.")
def keys_rotate_root(data_dir: Path | None) -> None:
    """Re-wrap every tenant key under a new root key (blobs are not re-encrypted)."""
    from openmaas.security.rotation import rotate_root_key

    settings = _settings(data_dir)
    outcome = rotate_root_key(settings)
    click.echo(f"Re-wrapped {outcome.tenant_keys} tenant keys under root key {outcome.key_id}.")
    if outcome.new_key_text:
        click.echo("Set this as OPENMAAS_ROOT_KEY before the next start (shown once):")
        click.echo(outcome.new_key_text)
    else:
        click.echo(f"The new root key replaced {settings.root_key_file}.")
    click.echo("The old root key no longer opens anything: destroy every copy of it.")


@cli.group()
def members() -> None:
    """Add and list the members of your tenant."""


@members.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["owner", "admin", "publisher", "consumer", "viewer"]),
    default="consumer",
    show_default=True,
)
@pass_ctx
def members_add(ctx: _Context, name: str, role: str) -> None:
    """Add member NAME with a role."""
    with ctx.client() as client:
        member = client.add_member(name, role)
    click.echo(f"Added member {member['name']} ({member['role']})")


@members.command("list")
@pass_ctx
def members_list(ctx: _Context) -> None:
    """List the members of your tenant."""
    with ctx.client() as client:
        for member in client.list_members():
            click.echo(f"{member['name']:30} {member['role']}")


@cli.group()
def erase() -> None:
    """Erase for good (crypto-shredding) and print the signed receipt id."""


def _erase(ctx: _Context, **target: str | int) -> None:
    with ctx.client() as client:
        receipt = client.erase(**target)
    counts = ", ".join(f"{v} {k}" for k, v in receipt["counts"].items())
    click.echo(f"Erased {receipt['target']} ({counts}). Receipt: {receipt['receipt_id']}")


@erase.command("tenant")
@click.argument("name")
@pass_ctx
def erase_tenant(ctx: _Context, name: str) -> None:
    """Erase tenant NAME with all its models, versions, members and keys."""
    _erase(ctx, tenant=name)


@erase.command("model")
@click.argument("model")
@pass_ctx
def erase_model(ctx: _Context, model: str) -> None:
    """Erase MODEL with all its versions."""
    _erase(ctx, model=model)


@erase.command("version")
@click.argument("model")
@click.argument("version", type=int)
@pass_ctx
def erase_version(ctx: _Context, model: str, version: int) -> None:
    """Erase one VERSION of MODEL."""
    _erase(ctx, model=model, version=version)


@erase.command("key")
@click.argument("key_id")
@pass_ctx
def erase_key(ctx: _Context, key_id: str) -> None:
    """Erase API key KEY_ID."""
    _erase(ctx, api_key=key_id)


@erase.command("member")
@click.argument("name")
@pass_ctx
def erase_member(ctx: _Context, name: str) -> None:
    """Erase member NAME and the keys that act for them."""
    _erase(ctx, member=name)


@cli.group()
def erasure() -> None:
    """Check erasure receipts."""


@erasure.command("verify")
@click.argument("receipt_id")
@pass_ctx
def erasure_verify(ctx: _Context, receipt_id: str) -> None:
    """Prove an erasure happened: exit 0 only if every check passes."""
    with ctx.client() as client:
        report = client.verify_erasure(receipt_id)
    for check in report["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        click.echo(f"{mark} {check['check']}: {check['detail']}")
    if not report["ok"]:
        raise click.exceptions.Exit(1)


@cli.group()
def audit() -> None:
    """Read and verify the audit log."""


@audit.command("verify")
@pass_ctx
def audit_verify(ctx: _Context) -> None:
    """Verify the hash chain and its signed checkpoints; exit 1 on any problem."""
    with ctx.client() as client:
        report = client.verify_audit()
    for problem in report["problems"]:
        click.echo(f"FAIL {problem}")
    click.echo(f"{'ok' if report['ok'] else 'BROKEN'}: {report['records']} records checked")
    if not report["ok"]:
        raise click.exceptions.Exit(1)


@audit.command("list")
@click.option("--after", type=int, default=0, help="Only records after this sequence number.")
@click.option("--limit", type=int, default=50, show_default=True)
@pass_ctx
def audit_list(ctx: _Context, after: int, limit: int) -> None:
    """Print audit records."""
    with ctx.client() as client:
        for record in client.audit_records(after=after, limit=limit):
            click.echo(
                f"{record['seq']:>6} {record['at']} {record['actor_tenant']}/"
                f"{record['actor_key_id']} {record['action']} {record['target']} "
                f"{record['outcome']}"
            )


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
