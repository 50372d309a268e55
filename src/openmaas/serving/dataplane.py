"""The transport-agnostic data plane: metadata, readiness and inference of models.

The OIP router, the CLI and any future protocol are thin adapters over these functions.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openmaas.errors import OpenMaaSError, RateLimitedError, RequestValidationError
from openmaas.explain.job import ExplainJob, ExplainResult
from openmaas.explain.plan import Caps, plan_job
from openmaas.explain.types import Background
from openmaas.quotas import Admission
from openmaas.registry import ModelRef, Registry, ResolvedVersion
from openmaas.runtimes.datatypes import datatype_of
from openmaas.security.policy import Action, Principal, require
from openmaas.serving.backends import ModelHandle
from openmaas.serving.engine import Engine, deadline_after
from openmaas.serving.scheduler import PRIORITIES
from openmaas.serving.types import InferenceRequest, InferenceResponse, Tensor

if TYPE_CHECKING:
    from openmaas.serving.metrics import EngineMetrics
from openmaas.serving.validation import validate_request

__all__ = ["DataPlane", "Explained"]


@dataclass(frozen=True)
class Explained:
    """An explanation with what it explains: the model version and the request's input."""

    resolved: ResolvedVersion
    job: ExplainJob
    result: ExplainResult


@dataclass
class _Plan:
    resolved: ResolvedVersion  # the latest resolution: loads use its current key material
    handle: ModelHandle
    batchable: bool  # every input and output has a dynamic first dimension
    outputs: list[str]  # the signature's outputs, answered when none are asked for
    version: str
    valid: set[tuple[object, ...]] = field(default_factory=set)  # request layouts that fit


class DataPlane:
    """Resolve a model reference, check the request, queue it on the engine."""

    def __init__(
        self,
        registry: Registry,
        engine: Engine,
        admission: Admission | None = None,
        default_timeout: float = 30.0,
        metrics: EngineMetrics | None = None,
        explain_caps: Caps | None = None,
    ) -> None:
        # Element counts are checked by the wire codecs on the declared shape, before any
        # data is allocated (api/v2_codec.py).
        self._registry = registry
        self._engine = engine
        self._admission = admission
        self._default_timeout = default_timeout
        self._metrics = metrics
        self._plans: dict[str, _Plan] = {}
        self._explain_caps = explain_caps or Caps(default_evals=2048, limit_evals=65_536)
        self._backgrounds: dict[str, Background | None] = {}
        self._erasures = 0  # forget() calls: a load that overlaps one is not cached

    def handle(self, resolved: ResolvedVersion) -> ModelHandle:
        """How the engine loads this version."""
        return self._plan(resolved).handle

    def _plan(self, resolved: ResolvedVersion) -> _Plan:
        """What every request to this version shares, worked out once per version."""
        key = resolved.blob_sha256 or f"{resolved.model_id}:{resolved.version}"
        plan = self._plans.get(key)
        if plan is not None:
            plan.resolved = resolved
        else:
            signature = resolved.signature

            def fetch() -> bytes:
                assert plan is not None  # noqa: S101 - set before any load
                return self._registry.load_artifact(plan.resolved)

            plan = _Plan(
                resolved,
                ModelHandle(
                    key=key,
                    name=f"{resolved.model_id}:{resolved.version}",
                    format=resolved.format,
                    fetch=fetch,
                ),
                all(t.shape[:1] == (-1,) for t in signature.inputs + signature.outputs),
                [spec.name for spec in signature.outputs],
                str(resolved.version),
            )
            if len(self._plans) >= 10_000:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def forget(self, keys: list[str]) -> None:
        """Drop what was worked out for these versions (after an erasure)."""
        self._erasures += 1
        for key in keys:
            self._plans.pop(key, None)
            self._backgrounds.pop(key, None)

    def deadline(self, timeout: object) -> float:
        """The monotonic deadline for a requested timeout in seconds (None: the default)."""
        if timeout is None:
            return deadline_after(self._default_timeout)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise RequestValidationError(
                "the timeout must be a positive number of seconds", field="timeout"
            )
        return deadline_after(min(float(timeout), self._default_timeout))

    def metadata(
        self, principal: Principal, ref: ModelRef, version: str | None = None
    ) -> dict[str, Any]:
        """OIP model metadata: name, versions, platform, inputs and outputs."""
        resolved = self._registry.resolve(principal, ref, version)
        require(principal, Action.MODELS_READ)
        signature = resolved.signature.to_dict()
        return {
            "name": resolved.model_id,
            "versions": [str(resolved.version)],
            "platform": f"{resolved.format}",
            "inputs": signature["inputs"],
            "outputs": signature["outputs"],
        }

    def ready(self, principal: Principal, ref: ModelRef, version: str | None = None) -> bool:
        """Whether the model can serve (models load on first use, so any stored one can)."""
        self._registry.resolve(principal, ref, version)
        require(principal, Action.MODELS_READ)
        return True

    async def infer(
        self,
        principal: Principal,
        ref: ModelRef,
        request: InferenceRequest,
        version: str | None = None,
        timeout_seconds: float | None = None,
        priority: str | None = None,
        client_gone: Callable[[], bool] | None = None,
    ) -> InferenceResponse:
        """Run one inference request and return every requested output.

        ``timeout_seconds`` (capped by the server default) covers queueing and running;
        ``priority`` is ``interactive`` (default) or ``batch``. Both may also come as the
        request's ``timeout`` and ``priority`` parameters. ``client_gone`` says whether the
        caller went away; its queued work is then dropped (see ``Engine.submit``).
        """
        deadline, priority = self._urgency(request, timeout_seconds, priority)
        resolved = self._registry.resolve(principal, ref, version)  # 404 before 403
        require(principal, Action.INFER)
        plan = self._plan(resolved)
        handle = plan.handle
        started = time.perf_counter()
        status = 500
        try:
            response = await self._run(
                principal, resolved, plan, request, deadline, priority, client_gone
            )
            status = 200
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        except OpenMaaSError as error:
            status = error.status
            if self._metrics is not None and isinstance(error, RateLimitedError):
                self._metrics.rejected(handle.name, error.code)
            raise
        finally:
            if self._metrics is not None:
                self._metrics.observe_request(handle.name, status, time.perf_counter() - started)

    def _urgency(
        self, request: InferenceRequest, timeout_seconds: float | None, priority: str | None
    ) -> tuple[float, str]:
        """The request's deadline and priority (its parameters win over the arguments)."""
        params = request.parameters
        deadline = self.deadline(params.get("timeout", timeout_seconds))
        priority = str(params.get("priority", priority) or "interactive")
        if priority not in PRIORITIES:
            raise RequestValidationError(
                "priority must be 'interactive' or 'batch'", field="priority"
            )
        return deadline, priority

    async def explain(
        self,
        principal: Principal,
        ref: ModelRef,
        request: InferenceRequest,
        version: str | None = None,
        timeout_seconds: float | None = None,
        client_gone: Callable[[], bool] | None = None,
    ) -> Explained:
        """Explain the prediction for a request's input (``parameters.explainer`` etc.).

        It passes the same checks as an inference (policy, rates, quotas), is refused with
        422 when it would cost more model evaluations than allowed, and queues on the
        model's fair queue charged at its evaluations; the replica that hosts the model
        runs it.
        """
        deadline, priority = self._urgency(request, timeout_seconds, None)
        resolved = self._registry.resolve(principal, ref, version)  # 404 before 403
        require(principal, Action.INFER)
        plan = self._plan(resolved)
        if self._admission is not None:
            self._admission.admit(
                principal, resolved.grant_id, resolved.grant_quota_per_day, resolved.model_id
            )
        validate_request(resolved.signature, request)
        if len(request.inputs) != 1:
            raise RequestValidationError("send the one input to explain", field="inputs")
        background = await self._background(resolved)
        job, cost = plan_job(
            format=resolved.format,
            facts=resolved.facts,
            inputs=resolved.signature.inputs,
            outputs=resolved.signature.outputs,
            rows=request.inputs[0].array,
            params=request.parameters,
            background=background,
            caps=self._explain_caps,
        )
        started = time.perf_counter()
        status = 500
        try:
            result = await self._engine.explain(
                plan.handle,
                resolved.deployment,
                principal.tenant_name,
                job,
                cost,
                deadline=deadline,
                weight=resolved.weight,
                priority=PRIORITIES[priority],
                client_gone=client_gone,
            )
            status = 200
        except OpenMaaSError as error:
            status = error.status
            raise
        finally:
            if self._metrics is not None:
                self._metrics.observe_explain(
                    plan.handle.name, job.method, status, time.perf_counter() - started
                )
        if self._metrics is not None:
            self._metrics.explain_evals(plan.handle.name, job.method, result.quality.n_evals)
        return Explained(resolved, job, result)

    async def _background(self, resolved: ResolvedVersion) -> Background | None:
        key = resolved.background_blob_sha256
        if key is None:
            return None
        if key in self._backgrounds:
            return self._backgrounds[key]
        erasures = self._erasures
        loaded = await asyncio.to_thread(self._registry.load_background, resolved)
        if erasures == self._erasures:  # no erasure while it loaded: safe to keep
            if len(self._backgrounds) >= 1000:
                self._backgrounds.clear()
            self._backgrounds[key] = loaded
        return loaded

    async def _run(
        self,
        principal: Principal,
        resolved: ResolvedVersion,
        plan: _Plan,
        request: InferenceRequest,
        deadline: float,
        priority: str,
        client_gone: Callable[[], bool] | None,
    ) -> InferenceResponse:
        if self._admission is not None:
            self._admission.admit(
                principal, resolved.grant_id, resolved.grant_quota_per_day, resolved.model_id
            )
        layout = (
            *((t.name, t.datatype, t.shape) for t in request.inputs),
            *(o.name for o in request.outputs),
        )
        if layout not in plan.valid:
            validate_request(resolved.signature, request)
            if len(plan.valid) >= 256:
                plan.valid.clear()
            plan.valid.add(layout)
        names = [o.name for o in request.outputs] or plan.outputs
        arrays = await self._engine.submit(
            plan.handle,
            resolved.deployment,
            principal.tenant_name,
            {t.name: t.array for t in request.inputs},
            names,
            deadline=deadline,
            weight=resolved.weight,
            priority=PRIORITIES[priority],
            batchable=plan.batchable,
            client_gone=client_gone,
        )
        outputs = []
        for name in names:
            array = arrays[name]
            outputs.append(Tensor(name, datatype_of(array), array.shape, array))
        return InferenceResponse(
            model_name=resolved.model_id,
            model_version=plan.version,
            outputs=outputs,
            id=request.id,
        )
