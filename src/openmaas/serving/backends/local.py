"""Replicas on this machine: data-only runtimes in the server process, the rest in workers.

An inline replica is an onnxruntime session in this process. A batch expected to take under
``_INLINE_SECONDS`` (its rows times the measured time per row) runs straight on the event
loop, where a thread hop would cost more than the model; a longer one, or the first one,
runs on the inference thread pool, so the loop keeps answering. Formats that
may carry code always run in a supervised worker process (``worker_process.py``).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from openmaas.errors import InferenceError, InvalidInputError, OpenMaaSError, WrongModelTaskError
from openmaas.explain.job import ExplainJob, ExplainResult
from openmaas.runtimes import Runtime, load_runtime
from openmaas.serving.backends.base import ModelHandle, Replica, Resources
from openmaas.serving.batching import rows_of
from openmaas.serving.deployment import Deployment

__all__ = ["INLINE_FORMATS", "InlineReplica", "LocalBackend", "physical_memory_bytes"]

# Data-only: graphs of known operators (and a tokenizer's tables), no user code.
INLINE_FORMATS = frozenset({"onnx", "text-onnx"})
_INLINE_SECONDS = 0.001
_INPUT_FAULTS = frozenset({"InvalidArgument", "Fail"})
_SOURCE_PATH = re.compile(r"\S*/\S+\.(?:h|cc|cpp|c):\d+\s*")


def physical_memory_bytes() -> int:
    """RAM of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def public_message(exc: Exception) -> str:
    """The runtime's message without its source paths, in one bounded line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return _SOURCE_PATH.sub("", text)[:500]


def run_runtime(
    runtime: Runtime, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
) -> dict[str, np.ndarray]:
    """Run the runtime, mapping its failures to OpenMaaS errors."""
    try:
        return runtime.predict(inputs, outputs)
    except OpenMaaSError:
        raise
    except Exception as exc:
        # Inputs already fit the signature, so onnxruntime's INVALID_ARGUMENT and FAIL
        # statuses come from the values (e.g. batch sizes that differ between inputs).
        message = public_message(exc)
        if type(exc).__name__ in _INPUT_FAULTS:
            raise InvalidInputError(f"the model rejected the input: {message}") from exc
        raise InferenceError(f"the model failed while running: {message}") from exc


class InlineReplica:
    """A runtime in this process."""

    def __init__(
        self,
        runtime: Runtime,
        memory_bytes: int,
        executor: ThreadPoolExecutor,
        fetch: Callable[[], bytes] | None = None,
    ) -> None:
        self._runtime: Runtime | None = runtime
        self._memory = memory_bytes
        self._executor = executor
        self._per_row: float | None = None  # seconds, exponentially weighted; None: unknown
        # ONNX: explanations that read the graph (trees, gradients) fetch it once, keep what
        # they parse from it, and not the bytes.
        self._fetch = fetch
        self._explain_cache: dict[str, Any] = {}

    @property
    def memory_bytes(self) -> int:
        return self._memory

    @property
    def alive(self) -> bool:
        return self._runtime is not None

    def run_now(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray] | None:
        rows = max(1, rows_of(inputs) or 1)
        if self._per_row is None or self._per_row * rows >= _INLINE_SECONDS:
            return None  # long or not measured yet: keep the event loop free
        return self._timed(rows, inputs, outputs)

    async def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        rows = max(1, rows_of(inputs) or 1)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, rows, inputs, outputs)

    def _timed(
        self, rows: int, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        runtime = self._runtime
        if runtime is None:
            raise InferenceError("the replica was closed")
        # CPU time of this thread: onnxruntime computes on the calling thread (one intra-op
        # thread), and waiting for the GIL, which wall time would count, is not the model's.
        started = time.thread_time()
        result = run_runtime(runtime, inputs, outputs)
        per_row = (time.thread_time() - started) / rows
        previous = self._per_row
        self._per_row = per_row if previous is None else previous + (per_row - previous) * 0.2
        return result

    async def explain(self, job: ExplainJob) -> ExplainResult:
        """Explain on the inference thread pool (never on the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._explain, job)

    def _explain(self, job: ExplainJob) -> ExplainResult:
        from openmaas.explain.execute import execute

        runtime = self._runtime
        if runtime is None:
            raise InferenceError("the replica was closed")
        try:
            return execute(job, runtime, self._fetch, self._explain_cache)
        except OpenMaaSError:
            raise
        except Exception as exc:
            raise InferenceError(f"the explanation failed: {public_message(exc)}") from exc

    async def generate(
        self,
        kind: str,
        body: Mapping[str, Any],
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        raise WrongModelTaskError("this model does not generate text")

    async def close(self) -> None:
        runtime, self._runtime = self._runtime, None
        self._fetch, self._explain_cache = None, {}
        if runtime is not None:
            runtime.unload()


class LocalBackend:
    """Replicas in this process (data-only formats) or in worker processes."""

    def __init__(
        self,
        *,
        cpu: float,
        memory_bytes: int,
        threads: int,
        isolation: str = "auto",
        hang_seconds: float = 1.5,  # so a hang is found within 2 s of happening
        llm_slots: int = 4,
        llm_context_tokens: int = 2048,
    ) -> None:
        self._llm = {"slots": llm_slots, "context": llm_context_tokens}
        self._capacity = Resources(cpu=cpu, memory_bytes=memory_bytes)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="infer")
        self._isolation = isolation
        self._hang_seconds = hang_seconds

    def capacity(self) -> Resources:
        return self._capacity

    def _in_process(self, model: ModelHandle, deployment: Deployment) -> bool:
        choice = deployment.isolation if deployment.isolation != "auto" else self._isolation
        return model.format in INLINE_FORMATS and choice in ("auto", "inline")

    async def start_replica(
        self, model: ModelHandle, deployment: Deployment, on_exit: Callable[[], None]
    ) -> Replica:
        loop = asyncio.get_running_loop()
        artifact = await loop.run_in_executor(self._executor, model.fetch)
        replica: Replica
        if self._in_process(model, deployment):
            replica = await loop.run_in_executor(self._executor, self._load_inline, model, artifact)
        else:
            from openmaas.serving.backends.worker_process import WorkerProcess

            threads = max(1, math.ceil(deployment.cpu))
            worker = WorkerProcess(
                model.format,
                artifact,
                name=model.name,
                hang_timeout=self._hang_seconds,
                threads=threads,
                on_exit=on_exit,
                options={"threads": threads, **(self._llm if model.format == "gguf" else {})},
            )
            await worker.start()
            replica = worker
        return replica

    def _load_inline(self, model: ModelHandle, artifact: bytes) -> InlineReplica:
        before = _rss_bytes()
        runtime = load_runtime(model.format, artifact)
        measured = _rss_bytes() - before  # other loads at the same time blur this; floor it
        fetch = model.fetch if model.format == "onnx" else None
        return InlineReplica(runtime, max(measured, len(artifact)), self._executor, fetch)

    async def close(self) -> None:
        """Stop the thread pool (the engine closed the replicas it started)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
