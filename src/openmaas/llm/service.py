"""Text generation for the OpenAI-compatible API: policy, quotas, fair slots, usage.

A request names a model the key may call. It passes the same checks as an inference (policy,
request rates, daily quotas) and the key's token quotas, waits for one of the model's slots in
fair order across tenants (``slots.py``), then runs in the model's worker process (a replica
leased from the engine, within the same cores and memory budget). The tokens it used are
charged to the tenant's fair-share counter as they stream, and counted per key, tenant and
model when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from openmaas.errors import (
    BadRequestError,
    ContextLengthExceededError,
    OverloadedError,
    WrongModelTaskError,
)
from openmaas.llm.attribution import attribute_prompt, count_evals, plan_spans
from openmaas.llm.slots import FairSlots
from openmaas.quotas import Admission
from openmaas.quotas.tokens import TokenBudget, token_scopes
from openmaas.registry import ModelRef, Registry, ResolvedVersion
from openmaas.security.policy import Action, Principal, require
from openmaas.serving.dataplane import DataPlane
from openmaas.serving.engine import Engine
from openmaas.serving.metrics import EngineMetrics
from openmaas.serving.types import InferenceRequest, Tensor

__all__ = ["Generation", "LlmService"]

log = logging.getLogger(__name__)

_END = object()


@dataclass
class Generation:
    """One admitted request: what it runs on and what it used."""

    principal: Principal
    resolved: ResolvedVersion
    prompt_tokens: int = 0
    completion_tokens: int = 0
    charged_input: int = 0  # tokens already charged to the tenant's fair-share counter
    charged_output: int = 0


class LlmService:
    """Runs chat and completion requests on GGUF models."""

    def __init__(
        self,
        registry: Registry,
        engine: Engine,
        dataplane: DataPlane,
        admission: Admission | None,
        tokens: TokenBudget,
        slots: int,
        metrics: EngineMetrics | None = None,
        max_waiting: int = 256,
    ) -> None:
        self._registry = registry
        self._engine = engine
        self._dataplane = dataplane
        self._admission = admission
        self._tokens = tokens
        self._slots_per_model = slots
        self._slots: dict[str, FairSlots] = {}
        self._metrics = metrics
        self._max_waiting = max_waiting

    def models(self, principal: Principal) -> list[dict[str, Any]]:
        """The models this key may call, as OpenAI model objects."""
        if not principal.can(Action.INFER):
            return []
        return [
            {
                "id": model.id,
                "object": "model",
                "created": int(model.created_at.timestamp()),
                "owned_by": model.tenant,
            }
            for model in self._registry.list(principal)
            if model.latest_version is not None
        ]

    def admit(self, principal: Principal, model: str, task: str = "text-generation") -> Generation:
        """Resolve ``model`` and run every check that comes before any work."""
        ref, _, version = model.partition(":")
        resolved = self._registry.resolve(principal, ModelRef.parse(ref), version or None)
        require(principal, Action.INFER)
        if task == "text-generation" and resolved.format != "gguf":
            raise WrongModelTaskError(
                f"{resolved.model_id} is not a language model (its format is "
                f"{resolved.format}); call it at /v2/models/{resolved.model_id}/infer",
                field="model",
            )
        self._tokens.check(principal.key_id)
        if self._admission is not None:
            self._admission.admit(
                principal, resolved.grant_id, resolved.grant_quota_per_day, resolved.model_id
            )
        return Generation(principal, resolved)

    async def complete(self, job: Generation, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run a request to its end; the OpenAI-shaped answer."""
        job.prompt_tokens = _estimated_tokens(body)  # until llama.cpp counts them
        try:
            async with self._slot(job) as replica:
                result = await replica.generate(kind, body)
                usage = result.get("usage") or {}
                job.prompt_tokens = int(usage.get("prompt_tokens", 0))
                job.completion_tokens = int(usage.get("completion_tokens", 0))
            _raise_for_error(result, job)
            return _tidy(result, job)
        finally:
            self._account(job)

    async def explain_prompt(
        self,
        job: Generation,
        prompt: str,
        *,
        completion: str | None,
        completion_tokens: int,
        max_evals: int,
        chat: bool,
    ) -> dict[str, Any]:
        """Attribute a completion's first tokens to the prompt's words by occlusion
        (``attribution.py``), all in one slot; its tokens are counted like a request's.

        Raises CostCapError (and InvalidInputError for a prompt or ``completion_tokens`` it
        cannot attribute) before any slot is taken or model started.
        """
        spans = plan_spans(prompt, completion_tokens, max_evals, chat)
        calls = count_evals(len(spans), completion_tokens)
        job.prompt_tokens = calls * _estimated_tokens({"prompt": prompt})  # charged at entry

        async def generate(kind: str, body: dict[str, Any]) -> dict[str, Any]:
            answer: dict[str, Any] = await replica.generate(kind, body)
            usage = answer.get("usage") or {}
            job.prompt_tokens += int(usage.get("prompt_tokens", 0))
            job.completion_tokens += int(usage.get("completion_tokens", 0))
            _raise_for_error(answer, job)
            return answer

        ran = False
        try:
            async with self._slot(job) as replica:
                ran, job.prompt_tokens = True, 0  # from here on, llama.cpp's own counts
                return await attribute_prompt(
                    generate,
                    prompt,
                    completion=completion,
                    completion_tokens=completion_tokens,
                    max_evals=max_evals,
                    chat=chat,
                )
        finally:
            if not ran:  # no slot or no replica: nothing was used
                job.prompt_tokens = 0
            self._account(job)

    async def stream(
        self, job: Generation, kind: str, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Run a streamed request; its chunks as they come.

        The first chunk is read before anything is answered, so a request the model refuses
        (e.g. too long for its context) raises here like a non-streamed one. Closing the
        iterator (the client went away) stops the generation at its next token.
        """
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body = {**body, "stream_options": {"include_usage": True}}
        queue: asyncio.Queue[Any] = asyncio.Queue()
        slots = self._slots_for(job)
        tenant = job.principal.tenant_name

        # Until llama.cpp's usage arrives (it does not when the client leaves), the prompt
        # is estimated at 4 characters a token and every text chunk counts as one token.
        job.prompt_tokens = _estimated_tokens(body)

        def on_chunk(chunk: dict[str, Any]) -> None:
            if _has_text(chunk):
                job.completion_tokens += 1
                job.charged_output += 1
                slots.charge(tenant, output_tokens=1)
            queue.put_nowait(chunk)

        async def run() -> None:
            try:
                async with self._slot(job) as replica:
                    await replica.generate(kind, body, on_chunk)
            finally:
                queue.put_nowait(_END)

        task = asyncio.ensure_future(run())
        try:
            while (chunk := await queue.get()) is not _END:
                _raise_for_error(chunk, job)
                usage = chunk.get("usage")
                if usage:
                    job.prompt_tokens = int(usage.get("prompt_tokens", 0))
                    job.completion_tokens = int(usage.get("completion_tokens", 0))
                    if not wants_usage:
                        continue
                yield _tidy(chunk, job)
            await task  # its error, if it failed
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self._account(job)

    async def embed(
        self, principal: Principal, model: str, texts: list[str], dimensions: int | None = None
    ) -> tuple[np.ndarray, int, str]:
        """Embed ``texts`` with a text encoder: the vectors, the tokens they took, the model.

        It runs as an inference (``text`` in, ``embedding`` and ``tokens`` out) through the
        data plane: the same policy, quotas, fair queue and batching as /v2 infer.
        """
        ref, _, version = model.partition(":")
        resolved = self._registry.resolve(principal, ModelRef.parse(ref), version or None)
        require(principal, Action.INFER)
        if resolved.format != "text-onnx" or resolved.signature.outputs[0].name != "embedding":
            raise WrongModelTaskError(
                f"{resolved.model_id} is not an embeddings model (format {resolved.format}, "
                f"first output {resolved.signature.outputs[0].name!r})",
                field="model",
            )
        size = resolved.signature.outputs[0].shape[-1]
        if dimensions is not None and dimensions != size:
            raise BadRequestError(
                f"{resolved.model_id} gives {size}-dimensional embeddings and was not trained "
                "to be shortened; leave dimensions out",
                field="dimensions",
            )
        self._tokens.check(principal.key_id)
        array = np.empty(len(texts), dtype=object)
        array[:] = [text.encode("utf-8") for text in texts]
        request = InferenceRequest([Tensor("text", "BYTES", (len(texts),), array)])
        response = await self._dataplane.infer(
            principal, ModelRef.parse(ref), request, version or None
        )
        outputs = {tensor.name: tensor.array for tensor in response.outputs}
        used = int(outputs["tokens"].sum())
        scopes = token_scopes(principal.key_id, principal.tenant_id, resolved.model_id)
        self._tokens.consume(scopes, principal.key_id, used)
        if self._metrics is not None:
            name = f"{resolved.model_id}:{resolved.version}"
            self._metrics.tokens(principal.tenant_name, name, used, "prompt")
        return outputs["embedding"], used, resolved.model_id

    def _slots_for(self, job: Generation) -> FairSlots:
        key = self._dataplane.handle(job.resolved).key
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = FairSlots(self._slots_per_model)
        return slots

    def _slot(self, job: Generation) -> _SlotLease:
        return _SlotLease(self, job)

    def _account(self, job: Generation) -> None:
        """Count what the request used, however it ended."""
        used = job.prompt_tokens + job.completion_tokens
        principal = job.principal
        scopes = token_scopes(principal.key_id, principal.tenant_id, job.resolved.model_id)
        self._tokens.consume(scopes, principal.key_id, used)
        if self._metrics is not None and used:
            name = f"{job.resolved.model_id}:{job.resolved.version}"
            self._metrics.tokens(principal.tenant_name, name, job.prompt_tokens, "prompt")
            self._metrics.tokens(principal.tenant_name, name, job.completion_tokens, "completion")


class _SlotLease:
    """``async with``: a fair slot of the model, then a leased replica to run on."""

    def __init__(self, service: LlmService, job: Generation) -> None:
        self._service = service
        self._job = job
        self._slots = service._slots_for(job)
        self._lease: Any = None

    async def __aenter__(self) -> Any:
        job, tenant = self._job, self._job.principal.tenant_name
        if self._slots.waiting() >= self._service._max_waiting:
            raise OverloadedError(
                f"{job.resolved.model_id} has {self._slots.waiting()} requests waiting for a "
                "slot; retry later",
                retry_after=5.0,
            )
        await self._slots.acquire(tenant, job.resolved.weight)
        # Charged now (estimated), so slots freed together do not all go to one tenant.
        self._slots.charge(tenant, input_tokens=job.prompt_tokens)
        job.charged_input = job.prompt_tokens
        try:
            handle = self._service._dataplane.handle(job.resolved)
            self._lease = self._service._engine.lease(handle, job.resolved.deployment)
            return await self._lease.__aenter__()
        except BaseException:
            self._slots.release(tenant)
            raise

    async def __aexit__(self, *exc: object) -> None:
        tenant = self._job.principal.tenant_name
        try:
            await self._lease.__aexit__(*exc)
        finally:
            job = self._job
            rest = max(0, job.completion_tokens - job.charged_output)
            extra_input = job.prompt_tokens - job.charged_input  # the estimate's error
            self._slots.charge(tenant, input_tokens=extra_input, output_tokens=rest)
            job.charged_input, job.charged_output = job.prompt_tokens, job.completion_tokens
            self._slots.release(tenant)


def _estimated_tokens(body: dict[str, Any]) -> int:
    text = body.get("prompt") or "".join(m["content"] for m in body.get("messages") or ())
    return max(1, len(str(text)) // 4)


def _has_text(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or choice.get("text"):
            return True
    return False


def _raise_for_error(answer: dict[str, Any], job: Generation) -> None:
    error = answer.get("error")
    if not isinstance(error, dict):
        return
    message = str(error.get("message", "the model refused the request"))[:1000]
    if error.get("type") == "exceed_context_size_error":
        raise ContextLengthExceededError(
            f"the prompt is {error.get('n_prompt_tokens')} tokens and {job.resolved.model_id} "
            f"has a context of {error.get('n_ctx')} tokens per request; shorten the messages",
            field="messages",
        )
    raise BadRequestError(message)


def _tidy(answer: dict[str, Any], job: Generation) -> dict[str, Any]:
    """The answer as OpenAI's API gives it: our model id, no llama.cpp internals."""
    answer.pop("timings", None)
    answer["model"] = job.resolved.model_id
    return answer
