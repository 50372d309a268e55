"""The OpenAI-compatible API: ``/v1/models``, chat and text completions, embeddings.

The official ``openai`` client works unchanged: the same API keys go in as Bearer tokens,
errors come in OpenAI's shape (``problems.py`` renders every error under ``/v1/`` that way),
so the client raises its own classes (401 AuthenticationError, 403 PermissionDeniedError,
404 NotFoundError, 400 BadRequestError, 429 RateLimitError with ``Retry-After``). Streams
are server-sent events ending in ``data: [DONE]``; a client that goes away stops the
generation at its next token.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from openmaas.api.deps import CurrentPrincipal, ServicesDep
from openmaas.errors import ContextLengthExceededError
from openmaas.llm.service import Generation

__all__ = ["router"]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="e.g. invalid_request_error, rate_limit_error")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str = Field(description="OpenMaaS's stable error code (see docs/errors.md).")


class OpenAIError(BaseModel):
    """Every error under /v1/, in OpenAI's shape."""

    error: OpenAIErrorBody


router = APIRouter(
    prefix="/v1",
    tags=["OpenAI-compatible"],
    responses={
        "4XX": {"model": OpenAIError, "description": "Refused; `error.code` says why."},
        "5XX": {"model": OpenAIError, "description": "The server failed or is not ready."},
    },
)
_GENERATED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The completion, or with `stream: true` its server-sent events.",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """What chat and completion requests share."""

    model: str = Field(min_length=1, max_length=300, description="tenant/name[:version]")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: int = Field(default=1, ge=1, le=8)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = Field(default=None, max_length=256)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] = Field(
        description="One prompt (a list of one is accepted too)."
    )
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1, max_length=300, description="tenant/name[:version]")
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)


@router.get("/models", summary="Models this key may call")
async def list_models(principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return {"object": "list", "data": services.llm.models(principal)}


@router.post(
    "/chat/completions",
    summary="Chat completion (OpenAI-compatible)",
    response_model=None,
    responses=_GENERATED,
)
async def chat_completions(
    request: Annotated[ChatRequest, Body()], principal: CurrentPrincipal, services: ServicesDep
) -> JSONResponse | StreamingResponse:
    body = _common(request, services.settings.llm_max_tokens)
    body["messages"] = [{"role": m.role, "content": _text(m.content)} for m in request.messages]
    if request.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs or 0
    job = services.llm.admit(principal, request.model)
    return await _answer(services, job, "chat", body)


@router.post(
    "/completions",
    summary="Text completion (OpenAI-compatible)",
    response_model=None,
    responses=_GENERATED,
)
async def completions(
    request: Annotated[CompletionRequest, Body()],
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> JSONResponse | StreamingResponse:
    prompt = request.prompt if isinstance(request.prompt, str) else request.prompt[0]
    body = _common(request, services.settings.llm_max_tokens)
    body["prompt"] = prompt
    if request.logprobs is not None:
        body["n_probs"] = request.logprobs
    job = services.llm.admit(principal, request.model)
    return await _answer(services, job, "completion", body)


@router.post("/embeddings", summary="Embeddings (OpenAI-compatible)")
async def embeddings(
    request: Annotated[EmbeddingRequest, Body()],
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> dict[str, Any]:
    texts = [request.input] if isinstance(request.input, str) else request.input
    vectors, used, model = await services.llm.embed(
        principal, request.model, texts, request.dimensions
    )
    data = [
        {"object": "embedding", "index": index, "embedding": _vector(vector, request)}
        for index, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": used, "total_tokens": used}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def _vector(vector: np.ndarray, request: EmbeddingRequest) -> list[float] | str:
    """One embedding as JSON numbers, or as base64 of little-endian float32 (what the
    official client asks for by default)."""
    if request.encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = vector.tolist()
    return values


def _common(request: _Sampling, cap: int) -> dict[str, Any]:
    """The llama.cpp request body for the sampling options the client set."""
    wanted = getattr(request, "max_completion_tokens", None) or request.max_tokens
    if wanted is not None and wanted > cap:
        raise ContextLengthExceededError(
            f"max_tokens is {wanted}; this server generates at most {cap} tokens per request "
            "(OPENMAAS_LLM_MAX_TOKENS)",
            field="max_tokens",
        )
    body: dict[str, Any] = {"max_tokens": wanted or cap, "n": request.n}
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop is not None:
        body["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.stream:
        body["stream"] = True
        include = request.stream_options.include_usage if request.stream_options else False
        body["stream_options"] = {"include_usage": include}
    return body


def _text(content: str | list[TextPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.text for part in content)


async def _answer(
    services: Any, job: Generation, kind: str, body: dict[str, Any]
) -> JSONResponse | StreamingResponse:
    if not body.get("stream"):
        return JSONResponse(await services.llm.complete(job, kind, body))
    chunks = services.llm.stream(job, kind, body)
    first = await anext(chunks, None)  # a refused request fails here, before any byte is sent

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield b"data: " + orjson.dumps(first) + b"\n\n"
            async for chunk in chunks:
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            await chunks.aclose()  # the client went away: stop generating

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
