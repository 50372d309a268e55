"""Commands that run the server: init, serve, whoami."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import click

from openmaas.cli._base import _Context, _echo_json, _settings, cli, pass_ctx


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
    from openmaas.cli.graceful import GracefulServer

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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # ours (openmaas.access) leaves query strings out of the logs
        ssl_certfile=str(settings.tls_cert) if https else None,
        ssl_keyfile=str(settings.tls_key) if https else None,
    )
    server = GracefulServer(config, app, settings.drain_timeout_seconds)
    server.run()
    if not server.clean:
        click.echo("Forced exit: requests were still in flight", err=True)
        raise SystemExit(1)


@cli.command()
@pass_ctx
def whoami(ctx: _Context) -> None:
    """Show the tenant, role and scopes of the API key."""
    with ctx.client() as client:
        _echo_json(client.whoami())
