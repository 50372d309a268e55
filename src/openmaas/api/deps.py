"""FastAPI dependencies: services from ``app.state`` and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from openmaas.bootstrap import Services
from openmaas.security import Principal

__all__ = ["CurrentPrincipal", "ServicesDep", "get_principal", "get_services"]


async def get_services(request: Request) -> Services:
    """The services composed by create_app."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(request: Request, services: ServicesDep) -> Principal:
    """Authenticate the ``Authorization: Bearer`` API key (cached briefly; no thread hop)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    principal = services.accounts.authenticate(token.strip() or None)
    request.state.principal = principal  # for the audit record of a later denial
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
