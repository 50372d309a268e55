"""Render every error as an RFC 9457 ``application/problem+json`` response."""

from __future__ import annotations

import functools
import logging
import math
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError as FastAPIValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Match

from openmaas.errors import (
    MethodNotAllowedError,
    OpenMaaSError,
    RateLimitedError,
    ServiceUnavailableError,
)

__all__ = [
    "PROBLEM_RESPONSES",
    "Problem",
    "install_problem_handlers",
    "openmaas_error_response",
    "problem_response",
    "unexpected_error_response",
]

log = logging.getLogger("openmaas.api")
PROBLEM_JSON = "application/problem+json"
OPENAI_PREFIX = "/v1/"  # the OpenAI-compatible routes, whose errors take OpenAI's shape
_HTTP_CODES = {404: "route_not_found", 405: "method_not_allowed"}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class Problem(BaseModel):
    """The body of every error response: an RFC 9457 problem with our stable ``code``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="https://openmaas.dev/problems/<code>")
    title: str
    status: int
    detail: str = Field(description="What went wrong and what to do next.")
    code: str = Field(description="Stable machine-readable code, e.g. model_not_found.")
    instance: str = Field(description="The request path.")
    field: str | None = Field(default=None, description="The input that was wrong.")
    errors: list[dict[str, str]] | None = Field(
        default=None, description="Schema validation: each wrong field and its message."
    )
    request_id: str | None = Field(default=None, description="500s: quote it to the operator.")


_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": Problem.model_json_schema()}}
# Every route can answer an error; each one is a problem+json document (FastAPI's default 422
# with its own JSON shape is replaced by this, as it is never sent).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "The request was refused; `code` says why.",
        "content": _PROBLEM_CONTENT,
    },
    "5XX": {"description": "The server failed or is not ready.", "content": _PROBLEM_CONTENT},
}


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response with our stable ``code`` (OpenAI's error shape under /v1/)."""
    if instance.startswith(OPENAI_PREFIX):
        if status == 422:
            status = 400  # OpenAI answers a malformed request with 400
        error = {"message": detail, "type": _openai_type(status), "param": extra.get("field")}
        return JSONResponse({"error": {**error, "code": code}}, status, headers=headers)
    body: dict[str, Any] = {
        "type": f"https://openmaas.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
        **{k: v for k, v in extra.items() if v is not None},
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _openai_type(status: int) -> str:
    """The ``type`` of an OpenAI-style error for an HTTP status."""
    types = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return types.get(status, "invalid_request_error")


async def _audit_denial(request: Request, exc: OpenMaaSError) -> None:
    """Leave an audit record of a refused key or a missing right (never the key itself)."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        return
    principal = getattr(request.state, "principal", None)
    tenant = principal.tenant_name if principal else "-"
    key_id = principal.key_id if principal else _key_id_of(request)
    client = request.client.host if request.client else "-"
    limiter = getattr(request.app.state, "denial_audit_limiter", None)
    if limiter is not None and limiter.take((client, key_id)):
        return  # a flood of denials is recorded once a second per client and key, not more
    await run_in_threadpool(
        functools.partial(
            services.audit.append,
            actor_tenant=tenant,
            actor_key_id=key_id,
            action="access.denied",
            target=f"{request.method} {request.url.path}"[:200],
            outcome="denied",
            details={"code": exc.code},
        )
    )


def _key_id_of(request: Request) -> str:
    """The public key id of a presented key, when it has the shape of one."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    key_id = token[3:15] if token.startswith("om_") and len(token) > 15 else ""
    return key_id if key_id.isalnum() else "-"


async def openmaas_error_response(request: Request, exc: Exception) -> JSONResponse:
    """The problem+json answer to an OpenMaaSError (auditing refused keys and rights)."""
    assert isinstance(exc, OpenMaaSError)  # noqa: S101 - registered for this type only
    if exc.status in (401, 403):
        await _audit_denial(request, exc)
    if exc.status >= 500 and not isinstance(exc, ServiceUnavailableError):
        # 503s are the expected answer to overload or a drain: metrics count them, and a
        # log line each would cost the most when the server has the least to spare.
        log.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if isinstance(exc, RateLimitedError | ServiceUnavailableError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if isinstance(exc, MethodNotAllowedError) and exc.allow:
        headers = {"Allow": exc.allow}
    return problem_response(
        exc.status, exc.code, exc.title, exc.detail, request.url.path, headers, field=exc.field
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FastAPIValidationError)  # noqa: S101
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem_response(
        422,
        "validation_error",
        "The request does not match the expected schema",
        f"fix these fields: {detail}",
        request.url.path,
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # noqa: S101
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = str(exc.detail)
    if exc.status_code == 404:
        detail = f"no route {request.method} {request.url.path}; see /docs for the API"
    title, headers = detail, dict(exc.headers or {})
    if exc.status_code == 405:
        # A 405 must list in ``Allow`` every method the path takes; Starlette names only those
        # of the first route that matched the path (GET and POST /keys are two routes).
        allow = _allowed_methods(request)
        headers["Allow"] = allow
        detail = f"{request.url.path} takes {allow}, not {request.method}; see /docs for the API"
    return problem_response(exc.status_code, code, title, detail, request.url.path, headers)


def _allowed_methods(request: Request) -> str:
    """Every method for which the app's router would find a route at this request's path."""
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)


async def unexpected_error_response(request: Request, exc: Exception) -> JSONResponse:
    """A 500 problem+json with a request id that the log line also carries."""
    request_id = uuid.uuid4().hex
    log.exception("unexpected error, request id %s", request_id, exc_info=exc)
    return problem_response(
        500,
        "internal_error",
        "Internal server error",
        f"the server failed unexpectedly; report request id {request_id} to the operator",
        request.url.path,
        request_id=request_id,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error path of ``app`` answer problem+json."""
    app.add_exception_handler(OpenMaaSError, openmaas_error_response)
    app.add_exception_handler(FastAPIValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, unexpected_error_response)
