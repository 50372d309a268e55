"""Commands for models: publish, list, show, alias, update, deploy, share, and infer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import numpy as np

from openmaas.cli._base import _Context, _echo_json, cli, pass_ctx

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
@click.option(
    "--card",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The model card: a JSON file, or Markdown with YAML front matter.",
)
@click.option(
    "--background",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Input rows for explanations: CSV (optional header), JSON or .npy.",
)
@pass_ctx
def models_publish(
    ctx: _Context,
    artifact: Path,
    name: str,
    alias: str | None,
    visibility: str | None,
    description: str | None,
    card: Path | None,
    background: Path | None,
) -> None:
    """Publish ARTIFACT (an .onnx file) as the next version of model NAME."""
    with ctx.client() as client:
        info = client.publish(
            artifact,
            name,
            alias=alias,
            visibility=visibility,
            description=description,
            card=card,
            background=background,
        )
    click.echo(f"Published {info['model']} version {info['version']} (sha256 {info['sha256']})")


@models.command("card")
@click.argument("model")
@click.option("--version", default="latest", show_default=True, help="Version or alias.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of Markdown.")
@pass_ctx
def models_card(ctx: _Context, model: str, version: str, as_json: bool) -> None:
    """Print MODEL's model card (Markdown with YAML front matter, or JSON)."""
    with ctx.client() as client:
        card = client.model_card(model, version, markdown=not as_json)
    if as_json:
        _echo_json(card)
    else:
        click.echo(card)


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


# The same words as serving.deployment.ISOLATIONS (not imported: it would load the server).
_ISOLATIONS = ("auto", "inline", "process")


@models.command("deploy")
@click.argument("model")
@click.option("--min-replicas", type=int, help="Replicas always loaded; 1 or more pins it.")
@click.option("--max-replicas", type=int, help="Most replicas under load.")
@click.option("--max-batch-size", type=int, help="Most rows merged into one batch.")
@click.option("--max-queue", type=int, help="Most requests waiting.")
@click.option("--cpu", type=float, help="Cores reserved per replica.")
@click.option("--memory-bytes", type=int, help="Memory per replica (else measured).")
@click.option("--gpu", type=int, help="GPUs per replica.")
@click.option("--idle-seconds", type=float, help="Idle time before replicas stop.")
@click.option("--isolation", type=click.Choice(_ISOLATIONS), help="Where the model runs.")
@click.option("--reset", is_flag=True, help="Start from the defaults, not the current settings.")
@pass_ctx
def models_deploy(ctx: _Context, /, model: str, reset: bool, **options: Any) -> None:
    """Show how MODEL is served, or change it: options not given keep their value."""
    changes = {name: value for name, value in options.items() if value is not None}
    with ctx.client() as client:
        if not changes and not reset:
            _echo_json(client.get_deployment(model))
            return
        current = {} if reset else client.get_deployment(model)
        _echo_json(client.set_deployment(model, **{**current, **changes}))


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
@click.option(
    "--weight", type=float, default=None, help="Its weight on this model (else its tenant's)."
)
@pass_ctx
def models_share(
    ctx: _Context, model: str, tenant: str, quota: str | None, weight: float | None
) -> None:
    """Let another tenant call MODEL."""
    with ctx.client() as client:
        grant = client.share(model, tenant, quota_per_day=_parse_quota(quota), weight=weight)
    limit = f" ({grant['quota_per_day']}/day)" if grant["quota_per_day"] else ""
    weighted = f" at weight {grant['weight']:g}" if grant.get("weight") is not None else ""
    click.echo(f"Shared {grant['model']} with {grant['tenant']}{limit}{weighted}")


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
        rows = client.grants(model)
    click.echo(f"{'TENANT':30} {'QUOTA/DAY':>10} WEIGHT")
    for grant in rows:
        quota = grant["quota_per_day"] or "unlimited"
        weight = "tenant's" if grant["weight"] is None else f"{grant['weight']:g}"
        click.echo(f"{grant['tenant']:30} {quota:>10} {weight}")


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
