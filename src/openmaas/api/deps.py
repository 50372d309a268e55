"""FastAPI dependencies: services from ``app.state`` and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from openmaas.bootstrap import Services
from openmaas.security import Principal

__all__ = ["CurrentPrincipal", "ServicesDep", "get_principal", "get_services"]


async def get_services(request: Request) -> Services:
    """The services composed by create_app."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


# Declares the API key in the OpenAPI schema; a missing or wrong key is our own 401 problem.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An OpenMaaS API key: `Authorization: Bearer om_...`.",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]


async def get_principal(
    request: Request, services: ServicesDep, credentials: BearerCredentials
) -> Principal:
    """Authenticate the ``Authorization: Bearer`` API key (cached briefly; no thread hop)."""
    token = credentials.credentials.strip() if credentials else ""
    principal = services.accounts.authenticate(token or None)
    request.state.principal = principal  # for the audit record of a later denial
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
