"""ASGI middleware that bounds request bodies: 413 before reading too much, never after."""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.api.problems import problem_response
from openmaas.errors import PayloadTooLargeError

__all__ = ["BodyLimitMiddleware"]

_UPLOAD_PATH = re.compile(r"^/api/v1/models/.+/versions$")


class BodyLimitMiddleware:
    """Reject bodies over the limit: model uploads get ``upload_limit``, the rest ``limit``."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    def _limit_for(self, scope: Scope) -> int:
        if scope["method"] == "POST" and _UPLOAD_PATH.match(scope["path"]):
            return self.upload_limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = problem_response(
                413,
                PayloadTooLargeError.code,
                PayloadTooLargeError.title,
                _too_large(limit),
                scope["path"],
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(_too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than this server's limit of {limit} bytes; "
        "send smaller batches (or ask the operator to raise OPENMAAS_MAX_REQUEST_BYTES)"
    )
