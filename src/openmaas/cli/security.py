"""Commands for erasure, erasure receipts and the audit log."""

from __future__ import annotations

import click

from openmaas.cli._base import _Context, cli, pass_ctx


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
