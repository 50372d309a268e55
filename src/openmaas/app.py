"""The composition root: ``create_app(settings)`` builds the ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from openmaas._version import __version__
from openmaas.api import manage, v2
from openmaas.api.limits import BodyLimitMiddleware
from openmaas.api.problems import install_problem_handlers
from openmaas.bootstrap import Services, build_services, initialize
from openmaas.settings import Settings

__all__ = ["create_app"]

DESCRIPTION = (
    "Self-hostable Model-as-a-Service: publish trained models, call them over the Open "
    "Inference Protocol with your own API key."
)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app; open and initialise the data directory unless ``services`` is given."""
    settings = settings or Settings()
    if services is None:
        services = build_services(settings)
        initialize(services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = True
        yield
        app.state.ready = False
        await services.backend.close()
        services.db.close()

    app = FastAPI(title="OpenMaaS", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.services = services
    # In-process use without a lifespan (tests with ASGITransport) is ready at once.
    app.state.ready = True
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_request_bytes,
        upload_limit=settings.max_artifact_bytes,
    )
    app.include_router(v2.router)
    app.include_router(manage.router)
    return app
