"""Commands for tenants, API keys and members."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from openmaas.cli._base import _Context, _settings, cli, pass_ctx

# -- tenants and keys -----------------------------------------------------------------------


@cli.group()
def tenants() -> None:
    """Create and list tenants, and set their weights (platform admins)."""


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
    """List tenants and their fair-share weights."""
    with ctx.client() as client:
        rows = client.list_tenants()
    click.echo(f"{'TENANT':40} {'WEIGHT':>8}")
    for tenant in rows:
        click.echo(f"{tenant['name']:40} {tenant['weight']:>8g}")


@tenants.command("weight")
@click.argument("name")
@click.argument("weight", type=float)
@pass_ctx
def tenants_weight(ctx: _Context, name: str, weight: float) -> None:
    """Set tenant NAME's fair-share WEIGHT in every model queue (default 1; max 1000)."""
    with ctx.client() as client:
        tenant = client.set_tenant_weight(name, weight)
    click.echo(f"Tenant {tenant['name']} now has weight {tenant['weight']:g}")


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
