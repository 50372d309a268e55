"""Explanations in the engine: queued fairly at their cost, run off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from openmaas.explain.job import ExplainJob, ExplainResult
from openmaas.explain.types import Background, Quality
from openmaas.runtimes.onnx_runtime import OnnxRuntime
from openmaas.serving.backends.local import InlineReplica
from openmaas.serving.deployment import Deployment
from openmaas.serving.engine import Engine
from tests.helpers.models import scale_model
from tests.unit.serving.test_engine import EchoBackend, EchoReplica, _model, _x


def _job(rows: np.ndarray, method: str = "exact") -> ExplainJob:
    return ExplainJob(
        method=method,
        input_name="x",
        input_datatype="FP32",
        output_name="y",
        rows=rows,
        max_evals=2048,
        background=Background(np.zeros((1, 4)), np.ones(1), "baseline"),
    )


class _ExplainingReplica(EchoReplica):
    async def explain(self, job: ExplainJob) -> ExplainResult:
        self._backend.ran.append(-1.0)  # an explanation ran here
        await asyncio.sleep(self._backend.seconds)
        k = 1
        return ExplainResult(
            "exact",
            np.zeros((*job.rows.shape, k)),
            np.zeros((len(job.rows), k)),
            np.zeros((len(job.rows), k)),
            Quality(n_evals=7, converged=True),
        )


class _ExplainingBackend(EchoBackend):
    async def start_replica(self, model, deployment, on_exit):  # type: ignore[no-untyped-def]
        self.started.append(model.key)
        return _ExplainingReplica(self, self.replica_memory)


def test_an_explanation_is_charged_its_cost_in_the_fair_queue() -> None:
    backend = _ExplainingBackend(seconds=0.02)

    async def main() -> None:
        engine = Engine(backend)
        deadline = time.monotonic() + 10
        model, deployment = _model(), Deployment()
        # Tenant a's first explanation takes the replica; its second waits behind b's
        # requests, because a was charged 1,000 rows for the first.
        calls = [
            engine.explain(model, deployment, "a", _job(np.ones((1, 4))), 1000, deadline=deadline)
        ]
        await asyncio.sleep(0.005)
        calls.append(
            engine.explain(model, deployment, "a", _job(np.ones((1, 4))), 1000, deadline=deadline)
        )
        calls += [
            engine.submit(model, deployment, "b", _x(float(i)), ["y"], deadline=deadline)
            for i in range(1, 4)
        ]
        results = await asyncio.gather(*calls)
        assert isinstance(results[0], ExplainResult)
        await engine.close()

    asyncio.run(main())
    assert backend.ran[0] == -1.0
    assert backend.ran[-1] == -1.0  # a's second explanation ran after b's three requests
    assert sorted(backend.ran[1:-1]) == [1.0, 2.0, 3.0]


class _RecordingRuntime(OnnxRuntime):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.threads: set[str] = set()

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self.threads.add(threading.current_thread().name)
        return super().predict(inputs, outputs)


def test_an_inline_replica_explains_on_the_inference_pool_not_the_event_loop() -> None:
    runtime = _RecordingRuntime(scale_model(3.0))
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
    replica = InlineReplica(runtime, 1000, executor, lambda: scale_model(3.0))
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)

    async def main() -> ExplainResult:
        loop_thread = threading.current_thread().name
        result = await replica.explain(_job(x))
        assert loop_thread not in runtime.threads
        return result

    result = asyncio.run(main())
    executor.shutdown()
    assert runtime.threads
    assert all(name.startswith("infer") for name in runtime.threads)
    # y = 3x against a zero baseline: each input's attribution to its own output is 3x.
    np.testing.assert_allclose(result.attributions[0].diagonal(), 3 * x[0], rtol=1e-6)
    assert result.quality.additivity_error is not None
    assert result.quality.additivity_error <= 1e-6
