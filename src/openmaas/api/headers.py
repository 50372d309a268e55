"""ASGI middleware that puts the security headers on every response.

Every answer is an API answer (JSON, never cached, never framed, never sniffed), except the
interactive docs pages: FastAPI's ``/docs`` and ``/redoc`` load Swagger UI / ReDoc from
``cdn.jsdelivr.net`` and start them with an inline script, so those paths alone get a policy
that allows that CDN and ``'unsafe-inline'``. ``Strict-Transport-Security`` goes only on
responses served over HTTPS (``scope["scheme"]``, which uvicorn sets when it serves TLS).

A header the app set itself is kept: a route may relax one on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "API_POLICY",
    "DOCS_POLICY",
    "SecurityHeadersMiddleware",
    "security_headers",
    "with_security_headers",
]

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
DOCS_POLICY = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; "
    "worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HSTS = "max-age=31536000"

_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
_API_HEADERS = (*_COMMON, (b"content-security-policy", API_POLICY.encode()))


class SecurityHeadersMiddleware:
    """Add the security headers to every HTTP response of ``app``."""

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in self.docs_paths
        await self.app(scope, receive, with_security_headers(send, security_headers(scope, docs)))


def security_headers(scope: Scope, docs: bool = False) -> list[tuple[bytes, bytes]]:
    """The headers every response to ``scope`` carries (``docs``: the docs pages' policy)."""
    if not docs and scope.get("scheme") != "https":
        return list(_API_HEADERS)
    if docs:
        headers = [*_COMMON, (b"content-security-policy", DOCS_POLICY.encode())]
    else:
        headers = list(_API_HEADERS)
    if scope.get("scheme") == "https":
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


def with_security_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``extra`` to the response start, keeping headers the app set."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers.extend((name, value) for name, value in extra if name not in present)
            message = {**message, "headers": headers}
        await send(message)

    return send_with_headers
