"""The inference hot path: ``POST /v2/models/.../infer`` as one plain ASGI handler.

FastAPI's dependency solving and the middleware stack cost more than a small model's
inference, so the OIP infer route is served here, before them, with the same steps: the
body limit, the API key, the data plane (policy, quotas, fair scheduling, batching) and the
same codec and problem+json errors. Anything unusual (a compressed body) goes the long way
through the full application, which also documents the route in OpenAPI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from openmaas.api.headers import security_headers, with_security_headers
from openmaas.api.problems import openmaas_error_response, unexpected_error_response
from openmaas.api.v2 import HEADER_LENGTH, ModelPath, parse_model_path
from openmaas.api.v2_codec import decode_request, encode_response
from openmaas.errors import (
    BadRequestError,
    MethodNotAllowedError,
    OpenMaaSError,
    PayloadTooLargeError,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from openmaas.bootstrap import Services

__all__ = ["FastInfer"]

log = logging.getLogger("openmaas.access")

T = TypeVar("T")
_PREFIX = "/v2/models/"
_JSON = (b"content-type", b"application/json")


class FastInfer:
    """Serve OIP inference requests of ``root`` directly (``handles`` says which)."""

    def __init__(self, root: FastAPI, services: Services) -> None:
        self.root = root
        self.services = services
        self.settings = services.settings
        self._paths: dict[str, ModelPath] = {}  # parsed infer paths (pure, so cacheable)

    @staticmethod
    def handles(scope: Scope) -> bool:
        """An uncompressed ``POST /v2/models/.../infer`` (compressed ones go the long way,
        which inflates them within the body limit)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path: str = scope["path"]
        if not path.startswith(_PREFIX) or not path.endswith("/infer"):
            return False
        return b"content-encoding" not in dict(scope["headers"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        headers = dict(scope["headers"])
        started = time.perf_counter()
        scope["app"] = self.root
        status = await self._serve(scope, receive, send, headers, path)
        if log.isEnabledFor(logging.INFO):
            client = scope.get("client") or ("-", 0)
            elapsed = (time.perf_counter() - started) * 1000
            log.info('%s "POST %s" %d %.1fms', client[0], path, status, elapsed)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], path: str
    ) -> int:
        services = self.services
        try:
            target = self._paths.get(path)
            if target is None:
                target = parse_model_path(path[len(_PREFIX) :])
                if len(self._paths) >= 10_000:
                    self._paths.clear()
                self._paths[path] = target
            if target.action != "infer":
                raise MethodNotAllowedError("metadata and readiness take GET", allow="GET")
            body = await self._body(receive, headers)
            token = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, credentials = token.partition(" ")
            principal = services.accounts.authenticate(
                credentials.strip() if scheme.lower() == "bearer" and credentials else None
            )
            scope.setdefault("state", {})["principal"] = principal
            settings = self.settings
            request = decode_request(
                body,
                _header_length(headers),
                max_elements=settings.max_tensor_elements,
                max_depth=settings.max_json_depth,
            )
            gone = _disconnect_flag(receive)
            work = services.dataplane.infer(
                principal, target.model, request, target.version, _timeout(headers), None, gone
            )
            response = await (work if gone is not None else _until_disconnect(work, receive))
            payload, json_length = encode_response(response, request)
        except asyncio.CancelledError:
            return 499  # the client went away; nothing to answer
        except OpenMaaSError as error:
            answer = await openmaas_error_response(Request(scope), error)
        except Exception as error:
            answer = await unexpected_error_response(Request(scope), error)
        else:
            await self._answer(scope, send, payload, json_length)
            return 200
        await answer(scope, receive, with_security_headers(send, security_headers(scope)))
        return answer.status_code

    @staticmethod
    async def _answer(scope: Scope, send: Send, payload: bytes, json_length: int | None) -> None:
        if json_length is None:
            response_headers = [_JSON]
        else:
            response_headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
            ]
        response_headers.append((b"content-length", str(len(payload)).encode()))
        response_headers.extend(security_headers(scope))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    async def _body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        limit = self.settings.max_request_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(_too_large(limit))
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                raise asyncio.CancelledError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(_too_large(limit))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"the request body is over {limit} bytes (OPENMAAS_MAX_REQUEST_BYTES); send less"


def _header_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(HEADER_LENGTH.encode())
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequestError(
            "Inference-Header-Content-Length must be a byte count",
            field="Inference-Header-Content-Length",
        )
    return int(value)


def _timeout(headers: dict[bytes, bytes]) -> float | None:
    """The X-Request-Timeout header in seconds (checked by the data plane)."""
    value = headers.get(b"x-request-timeout")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise BadRequestError(
            "X-Request-Timeout must be a number of seconds, e.g. 0.5", field="X-Request-Timeout"
        ) from None


def _disconnect_flag(receive: Receive) -> Callable[[], bool] | None:
    """A cheap poll of whether the client went away, where the server keeps one.

    uvicorn's ``receive`` belongs to a request cycle whose ``disconnected`` flag it sets when
    the connection drops; polling it when the work's turn comes saves a watcher task per
    request. Other servers get the watcher (``_until_disconnect``).
    """
    cycle: Any = getattr(receive, "__self__", None)
    if not isinstance(getattr(cycle, "disconnected", None), bool):
        return None
    return lambda: bool(cycle.disconnected)


async def _until_disconnect(work: Coroutine[Any, Any, T], receive: Receive) -> T:
    """Await ``work``; if the client disconnects first, cancel it (queued work never runs)."""
    current = asyncio.current_task()
    watcher = asyncio.ensure_future(receive())

    def on_message(done: asyncio.Future[Message]) -> None:
        if done.cancelled() or done.exception() is not None or current is None:
            return
        if done.result()["type"] == "http.disconnect":
            current.cancel()

    watcher.add_done_callback(on_message)
    try:
        return await work
    finally:
        watcher.remove_done_callback(on_message)
        watcher.cancel()
