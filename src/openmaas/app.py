"""The composition root: ``create_app(settings)`` builds the ASGI application."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from openmaas._version import __version__
from openmaas.api import manage, metrics, openai, security, sharing, v2
from openmaas.api.access_log import AccessLogMiddleware
from openmaas.api.fast_infer import FastInfer
from openmaas.api.headers import (
    SecurityHeadersMiddleware,
    security_headers,
    with_security_headers,
)
from openmaas.api.limits import BodyLimitMiddleware, JSONDepthMiddleware
from openmaas.api.problems import PROBLEM_RESPONSES, install_problem_handlers, problem_response
from openmaas.bootstrap import Services, build_services, initialize
from openmaas.errors import DrainingError
from openmaas.quotas import RateLimiter
from openmaas.settings import Settings

__all__ = ["OpenMaaSApp", "create_app"]

DESCRIPTION = (
    "Self-hostable Model-as-a-Service: publish trained models, call them over the Open "
    "Inference Protocol with your own API key."
)


class OpenMaaSApp(FastAPI):
    """FastAPI behind the security headers (so even a 500 carries them) and the infer path."""

    fast_infer: FastInfer | None = None
    draining = False
    in_flight = 0  # HTTP requests being answered now

    def build_middleware_stack(self) -> ASGIApp:
        pages = (self.docs_url, self.redoc_url, self.swagger_ui_oauth2_redirect_url)
        docs = [page for page in pages if page and self.openapi_url]
        return SecurityHeadersMiddleware(super().build_middleware_stack(), docs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.draining and scope["path"] not in _HEALTH:
            await _refuse_while_draining(scope, receive, send)
            return
        self.in_flight += 1
        try:
            if self.fast_infer is not None and self.fast_infer.handles(scope):
                await self.fast_infer(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def drain(self, seconds: float) -> bool:
        """Stop taking requests (not ready, new ones 503) and wait up to ``seconds`` for
        the ones in flight and the engine's queued work; True if everything finished."""
        self.state.ready = False
        self.draining = True
        deadline = time.monotonic() + seconds
        engine = self.state.services.engine
        while time.monotonic() < deadline:
            if self.in_flight == 0 and await engine.drain(0):
                return True
            await asyncio.sleep(0.01)
        return self.in_flight == 0 and await engine.drain(0)


_HEALTH = frozenset({"/v2/health/live", "/v2/health/ready"})


async def _refuse_while_draining(scope: Scope, receive: Receive, send: Send) -> None:
    answer = problem_response(
        503,
        DrainingError.code,
        DrainingError.title,
        "the server is shutting down and takes no new requests; retry on another replica",
        scope["path"],
        {"Retry-After": "1"},
    )
    await answer(scope, receive, with_security_headers(send, security_headers(scope)))


async def _load_pinned(services: Services) -> None:
    """Start the minimum replicas of every pinned model (``min_replicas >= 1``)."""
    for resolved in await asyncio.to_thread(services.registry.pinned):
        await services.engine.ensure(services.dataplane.handle(resolved), resolved.deployment)


async def _flush_usage_every_second(services: Services) -> None:
    """Persist usage counters in the background (off the event loop)."""
    while True:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(services.meter.flush)


def create_app(settings: Settings | None = None, services: Services | None = None) -> OpenMaaSApp:
    """Build the app; open and initialise the data directory unless ``services`` is given."""
    settings = settings or Settings()
    if services is None:
        services = build_services(settings)
        initialize(services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = True
        # Background threads (usage flush, audit writes, long batches) hand the GIL back to
        # the event loop within 1 ms instead of 5, which bounds the stalls they cause.
        sys.setswitchinterval(0.001)
        # What start-up built lives as long as the server: keep it out of the collector's
        # full passes, which otherwise pause every request for tens of milliseconds.
        gc.freeze()
        services.engine.start()
        await _load_pinned(services)
        flusher = asyncio.create_task(_flush_usage_every_second(services))
        yield
        app.state.ready = False
        flusher.cancel()
        await services.engine.close()
        services.meter.flush()
        services.db.close()

    docs = settings.docs_enabled  # off: no /docs, /redoc or /openapi.json (they answer 404)
    app = OpenMaaSApp(
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
    app.state.metrics = services.metrics
    app.fast_infer = FastInfer(app, services)
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
    app.include_router(metrics.router)
    app.include_router(openai.router)
    return app
