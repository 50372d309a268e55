"""The composition root: ``create_app(settings)`` builds the ASGI application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from openmaas._version import __version__
from openmaas.api import manage, security, sharing, v2
from openmaas.api.access_log import AccessLogMiddleware
from openmaas.api.headers import SecurityHeadersMiddleware
from openmaas.api.limits import BodyLimitMiddleware, JSONDepthMiddleware
from openmaas.api.problems import PROBLEM_RESPONSES, install_problem_handlers
from openmaas.bootstrap import Services, build_services, initialize
from openmaas.quotas import RateLimiter
from openmaas.settings import Settings

__all__ = ["create_app"]

DESCRIPTION = (
    "Self-hostable Model-as-a-Service: publish trained models, call them over the Open "
    "Inference Protocol with your own API key."
)


class _App(FastAPI):
    """FastAPI with the security headers as its outermost layer, so even a 500 carries them."""

    def build_middleware_stack(self) -> ASGIApp:
        pages = (self.docs_url, self.redoc_url, self.swagger_ui_oauth2_redirect_url)
        docs = [page for page in pages if page and self.openapi_url]
        return SecurityHeadersMiddleware(super().build_middleware_stack(), docs)


async def _flush_usage_every_second(services: Services) -> None:
    """Persist usage counters in the background (off the event loop)."""
    while True:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(services.meter.flush)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app; open and initialise the data directory unless ``services`` is given."""
    settings = settings or Settings()
    if services is None:
        services = build_services(settings)
        initialize(services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = True
        flusher = asyncio.create_task(_flush_usage_every_second(services))
        yield
        app.state.ready = False
        flusher.cancel()
        await services.backend.close()
        services.meter.flush()
        services.db.close()

    docs = settings.docs_enabled  # off: no /docs, /redoc or /openapi.json (they answer 404)
    app = _App(
        title="OpenMaaS",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        responses=PROBLEM_RESPONSES,  # every error is problem+json: say so in the schema
    )
    app.state.services = services
    app.state.denial_audit_limiter = RateLimiter(rate=1.0, burst_seconds=5.0)
    # In-process use without a lifespan (tests with ASGITransport) is ready at once.
    app.state.ready = True
    install_problem_handlers(app)
    # The last added runs first: bodies are capped and inflated, then their JSON measured.
    app.add_middleware(JSONDepthMiddleware, max_depth=settings.max_json_depth)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_request_bytes,
        upload_limit=settings.max_artifact_bytes,
    )
    app.include_router(v2.router)
    app.include_router(sharing.router)  # before manage: its routes end in /grants
    app.include_router(security.router)
    app.include_router(manage.router)
    return app
