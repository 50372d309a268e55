"""ASGI middleware that bounds request bodies before the app parses them.

``BodyLimitMiddleware`` caps the body: 413 before reading too much, never after. A body sent
with ``Content-Encoding: gzip`` or ``deflate`` is inflated chunk by chunk under the same cap
(zlib with ``max_length``, so a gzip bomb is refused after at most ``limit + 1`` inflated
bytes); the app sees the plain body and no Content-Encoding. Other encodings get a 400.

``JSONDepthMiddleware`` bounds how deep JSON nests, for every body FastAPI parses itself (the
content types ``application/json`` and ``application/*+json``: the management API; model
uploads are raw artifacts and skipped). It measures the body with ``check_json_depth`` (linear,
no recursion) before the app receives its last chunk. The OIP router parses its own bodies,
whatever their content type, with ``parse_json``, which runs the same check; so no JSON body
reaches ``json.loads`` unmeasured.

FastAPI turns any exception raised while it reads a body into its own generic 400, so when
a middleware here refuses a body it also replaces whatever the app then answers with its own
problem (``_Refusal``).
"""

from __future__ import annotations

import re
import zlib
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.api.problems import problem_response
from openmaas.api.v2_codec import check_json_depth
from openmaas.errors import BadRequestError, OpenMaaSError, PayloadTooLargeError

__all__ = ["BodyLimitMiddleware", "JSONDepthMiddleware"]

_UPLOAD_PATH = re.compile(r"^/api/v1/models/.+/versions$")
# zlib window bits per Content-Encoding: gzip framing, and zlib framing (HTTP's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _problem(error: OpenMaaSError, scope: Scope) -> Response:
    return problem_response(
        error.status, error.code, error.title, error.detail, scope["path"], field=error.field
    )


class _Refusal:
    """Lets a receive wrapper refuse the body: the client then gets our problem, not the app's."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._error: OpenMaaSError | None = None
        self._started = False  # the app's own response went out before any refusal
        self._answered = False

    def refuse(self, error: OpenMaaSError) -> None:
        if self._error is None:
            self._error = error

    async def _answer(self) -> None:
        if self._answered or self._error is None:
            return
        self._answered = True
        await _problem(self._error, self._scope)(self._scope, self._receive, self._send)

    async def send(self, message: Message) -> None:
        if self._error is None or self._started:
            self._started = self._started or message["type"] == "http.response.start"
            await self._send(message)
        elif message["type"] == "http.response.start":
            await self._answer()
        # else: the rest of the app's answer to a refused body is dropped

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive) -> None:
        try:
            await app(scope, receive, self.send)
        except OpenMaaSError as exc:
            if exc is not self._error or self._started:
                raise
            await self._answer()


class BodyLimitMiddleware:
    """Reject bodies over the limit: model uploads get ``upload_limit``, the rest ``limit``."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    def _limit_for(self, scope: Scope) -> tuple[int, str]:
        """The byte limit of this request and the setting that raises it."""
        if scope["method"] == "POST" and _UPLOAD_PATH.match(scope["path"]):
            return self.upload_limit, "OPENMAAS_MAX_ARTIFACT_BYTES"
        return self.limit, "OPENMAAS_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit_for(scope)
        headers = Headers(scope=scope)
        try:
            encoding = _content_encoding(headers)
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLargeError(_too_large(limit, setting))
        except OpenMaaSError as exc:
            await _problem(exc, scope)(scope, receive, send)
            return
        inflater = None if encoding is None else _Inflater(encoding, limit, setting)
        if "content-encoding" in headers:
            # The app sees the body as inflated here: no Content-Encoding, no stale length.
            dropped = {b"content-encoding"} | ({b"content-length"} if inflater else set())
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in dropped]}
        refusal = _Refusal(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                try:
                    if received > limit:
                        raise PayloadTooLargeError(_too_large(limit, setting))
                    if inflater is not None:
                        message["body"] = inflater.feed(body, not message.get("more_body", False))
                except OpenMaaSError as exc:
                    refusal.refuse(exc)
                    raise
            return message

        await refusal.run(self.app, scope, limited_receive)


def _too_large(limit: int, setting: str, inflated: bool = False) -> str:
    size = "inflates to more than" if inflated else "is larger than"
    return (
        f"the request body {size} this server's limit of {limit} bytes; "
        f"send smaller batches (or ask the operator to raise {setting})"
    )


def _content_encoding(headers: Headers) -> str | None:
    """The coding the body is compressed with (None: sent as is), or BadRequestError."""
    codings = [
        coding.strip().lower()
        for value in headers.getlist("content-encoding")
        for coding in value.split(",")
    ]
    codings = [coding for coding in codings if coding not in ("", "identity")]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _WBITS:
        return codings[0]
    raise BadRequestError(
        f"Content-Encoding {', '.join(codings)!r} is not supported; send the body as is or "
        "compressed with one of: gzip, deflate",
        field="Content-Encoding",
    )


class _Inflater:
    """Inflate a gzip/deflate body chunk by chunk, never producing more than ``limit`` bytes."""

    def __init__(self, encoding: str, limit: int, setting: str) -> None:
        self._stream = zlib.decompressobj(_WBITS[encoding])
        self._encoding = encoding
        self._limit = limit
        self._setting = setting
        self._produced = 0
        self._fed = False

    def _bad(self, problem: str) -> BadRequestError:
        return BadRequestError(
            f"the body is not valid {self._encoding} data ({problem}); compress the whole "
            f"body once, or send it as is without Content-Encoding",
            field="Content-Encoding",
        )

    def feed(self, data: bytes, final: bool) -> bytes:
        """The inflated bytes of one chunk of the body (``final``: the last chunk)."""
        inflated = b""
        if data:
            self._fed = True
            try:
                # One byte over what is left: stopping short of it means all input was used.
                inflated = self._stream.decompress(data, self._limit - self._produced + 1)
            except zlib.error as exc:
                raise self._bad(str(exc)) from exc
            self._produced += len(inflated)
            if self._produced > self._limit:
                raise PayloadTooLargeError(_too_large(self._limit, self._setting, inflated=True))
            if self._stream.unused_data:
                raise self._bad("data follows the end of the compressed stream")
        if final and self._fed and not self._stream.eof:
            raise self._bad("the compressed stream is cut short")
        return inflated


def _is_json(headers: Headers) -> bool:
    """Whether FastAPI would parse this body as JSON (its own content-type rule)."""
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


class JSONDepthMiddleware:
    """Refuse JSON bodies nested deeper than ``max_depth`` (400) before the app parses them."""

    def __init__(self, app: ASGIApp, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        # A model upload is the raw artifact, never JSON, whatever its Content-Type says.
        if headers is None or not _is_json(headers) or _UPLOAD_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        # An OIP binary request is a JSON header of this many bytes, then raw tensor data.
        header_length = headers.get("inference-header-content-length", "")
        json_length = int(header_length) if header_length.isdigit() else None
        refusal = _Refusal(scope, receive, send)
        chunks: list[bytes] = []

        async def checked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = b"".join(chunks)
                    chunks.clear()
                    try:
                        check_json_depth(body[:json_length], self.max_depth)
                    except OpenMaaSError as exc:
                        refusal.refuse(exc)
                        raise
            return message

        await refusal.run(self.app, scope, checked_receive)
