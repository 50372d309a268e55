"""Engine: batching, bounded queues, deadlines, cancellation, memory budget and scaling.

The replicas here are a small in-test Backend (the engine's own seam) whose batches take a
chosen time and echo their input, so timing-dependent behaviour is deterministic; the real
backends have their own tests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest

from openmaas.errors import (
    DeadlineExceededError,
    DrainingError,
    OverloadedError,
    TenantOverShareError,
)
from openmaas.serving.backends import ModelHandle, Resources
from openmaas.serving.deployment import Deployment
from openmaas.serving.engine import Engine, EngineDefaults
from openmaas.serving.metrics import EngineMetrics


class EchoReplica:
    """Answers ``y = x`` after ``seconds`` per batch; records the batches it ran."""

    def __init__(self, backend: EchoBackend, memory: int) -> None:
        self._backend = backend
        self._memory = memory
        self._alive = True

    @property
    def memory_bytes(self) -> int:
        return self._memory

    def run_now(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray] | None:
        return None  # always the asynchronous way, which takes its time

    @property
    def alive(self) -> bool:
        return self._alive

    async def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self._backend.batches.append(int(inputs["x"].shape[0]))
        self._backend.ran.extend(inputs["x"][:, 0].tolist())
        await asyncio.sleep(self._backend.seconds)
        return {"y": inputs["x"].copy()}

    async def close(self) -> None:
        self._alive = False
        self._backend.closed += 1


class EchoBackend:
    def __init__(self, cpu: float = 4, memory: int = 10_000, seconds: float = 0.0) -> None:
        self.resources = Resources(cpu=cpu, memory_bytes=memory)
        self.seconds = seconds
        self.batches: list[int] = []
        self.ran: list[float] = []
        self.started: list[str] = []
        self.closed = 0
        self.replica_memory = 100

    def capacity(self) -> Resources:
        return self.resources

    async def start_replica(
        self, model: ModelHandle, deployment: Deployment, on_exit: Callable[[], None]
    ) -> EchoReplica:
        self.started.append(model.key)
        return EchoReplica(self, self.replica_memory)

    async def close(self) -> None:
        return None


def _model(key: str = "m") -> ModelHandle:
    return ModelHandle(key=key, name=f"t/{key}:1", format="echo", fetch=lambda: b"")


def _x(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 2), value, dtype=np.float32)}


def _run(coroutine_factory: Callable[[], object]) -> object:
    async def main() -> object:
        return await coroutine_factory()  # type: ignore[misc]

    return asyncio.run(main())


async def _submit(
    engine: Engine,
    value: float,
    *,
    model: str = "m",
    tenant: str = "t",
    deployment: Deployment | None = None,
    seconds: float = 5.0,
    rows: int = 1,
) -> np.ndarray:
    out = await engine.submit(
        _model(model),
        deployment or Deployment(),
        tenant,
        _x(value, rows),
        ["y"],
        deadline=time.monotonic() + seconds,
    )
    return out["y"]


def test_requests_that_arrive_while_busy_are_batched_and_answered_each() -> None:
    backend = EchoBackend(seconds=0.05)
    metrics = EngineMetrics()
    engine = Engine(backend, EngineDefaults(max_batch_size=8), metrics)

    async def main() -> list[np.ndarray]:
        first = asyncio.ensure_future(_submit(engine, 0))
        await asyncio.sleep(0.01)  # the first runs alone: no waiting delay at low load
        rest = [asyncio.ensure_future(_submit(engine, v)) for v in range(1, 21)]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(main())
    assert [float(a[0, 0]) for a in answers] == [float(v) for v in range(21)]
    assert backend.batches[0] == 1
    assert max(backend.batches) == 8  # capped at max_batch_size
    assert sum(backend.batches) == 21
    assert len(backend.batches) <= 5


def test_requests_of_different_shapes_are_not_merged() -> None:
    backend = EchoBackend(seconds=0.02)
    engine = Engine(backend)

    async def main() -> None:
        blocker = asyncio.ensure_future(_submit(engine, 0))
        await asyncio.sleep(0.005)
        other = {"x": np.zeros((1, 3), dtype=np.float32)}
        odd = engine.submit(_model(), Deployment(), "t", other, ["y"], deadline=math.inf)
        await asyncio.gather(blocker, _submit(engine, 1), _submit(engine, 2), odd)

    asyncio.run(main())
    assert backend.batches == [1, 2, 1]


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    backend = EchoBackend(seconds=0.2)
    engine = Engine(backend, EngineDefaults(max_queue=3, max_batch_size=1))

    async def main() -> list[BaseException | np.ndarray]:
        tasks = [asyncio.ensure_future(_submit(engine, v, tenant=f"t{v}")) for v in range(6)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(TenantOverShareError) as refused:
            await _submit(engine, 9, tenant="t5")
        assert time.monotonic() - started < 0.05  # at once, not after queueing
        assert refused.value.retry_after >= 1
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    refusals = [r for r in results if isinstance(r, OverloadedError | TenantOverShareError)]
    assert refusals
    assert all(r.retry_after >= 1 for r in refusals)  # type: ignore[union-attr]


def test_a_flooding_tenant_gets_the_429s_and_a_quiet_one_gets_in() -> None:
    backend = EchoBackend(seconds=0.01)
    engine = Engine(backend, EngineDefaults(max_queue=8, max_batch_size=1))

    async def main() -> tuple[list[object], np.ndarray]:
        flood = [asyncio.ensure_future(_submit(engine, v, tenant="noisy")) for v in range(40)]
        await asyncio.sleep(0)
        quiet = await _submit(engine, 99, tenant="quiet")
        return await asyncio.gather(*flood, return_exceptions=True), quiet

    flood, quiet = asyncio.run(main())
    assert float(quiet[0, 0]) == 99
    assert sum(isinstance(r, TenantOverShareError) for r in flood) >= 30


def test_the_deadline_covers_execution() -> None:
    backend = EchoBackend(seconds=1.0)
    engine = Engine(backend)

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await _submit(engine, 1, seconds=0.1)
        return time.monotonic() - started

    assert asyncio.run(main()) < 0.5


def test_work_that_cannot_make_its_deadline_is_refused_up_front() -> None:
    backend = EchoBackend(seconds=0.05)
    engine = Engine(backend, EngineDefaults(max_batch_size=1))

    async def main() -> None:
        await _submit(engine, 0)  # measures the model's speed
        backlog = [asyncio.ensure_future(_submit(engine, v, tenant=f"t{v}")) for v in range(20)]
        await asyncio.sleep(0)
        started = time.monotonic()
        with pytest.raises(OverloadedError) as refused:
            await _submit(engine, 99, tenant="late", seconds=0.06)
        assert time.monotonic() - started < 0.03
        assert refused.value.retry_after >= 1
        await asyncio.gather(*backlog)

    asyncio.run(main())


def test_a_cancelled_request_never_runs() -> None:
    backend = EchoBackend(seconds=0.1)
    engine = Engine(backend, EngineDefaults(max_batch_size=1))

    async def main() -> None:
        first = asyncio.ensure_future(_submit(engine, 1))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(_submit(engine, 2))
        await asyncio.sleep(0.01)
        gone.cancel()  # what a client disconnect does
        await asyncio.gather(first, _submit(engine, 3))

    asyncio.run(main())
    assert backend.ran == [1.0, 3.0]


def test_work_whose_client_is_gone_when_its_turn_comes_never_runs() -> None:
    backend = EchoBackend(seconds=0.1)
    engine = Engine(backend, EngineDefaults(max_batch_size=1))
    client = {"left": False}

    async def main() -> None:
        first = asyncio.ensure_future(_submit(engine, 1))
        await asyncio.sleep(0.01)
        polled = engine.submit(
            _model("m"),
            Deployment(),
            "t",
            _x(2),
            ["y"],
            deadline=time.monotonic() + 5,
            client_gone=lambda: client["left"],
        )
        stays = engine.submit(
            _model("m"), Deployment(), "t", _x(3), ["y"], deadline=time.monotonic() + 5
        )
        gone = asyncio.ensure_future(polled)
        kept = asyncio.ensure_future(stays)
        await asyncio.sleep(0.01)
        client["left"] = True  # the server saw the connection drop
        with pytest.raises(asyncio.CancelledError):
            await gone
        await asyncio.gather(first, kept)

    asyncio.run(main())
    assert backend.ran == [1.0, 3.0]


def test_a_leased_replica_is_started_once_and_kept_until_released() -> None:
    backend = EchoBackend(memory=150)  # room for one replica of 100 bytes
    engine = Engine(backend, EngineDefaults(idle_seconds=0))

    async def main() -> None:
        async with engine.lease(_model("llm"), Deployment()) as first:
            async with engine.lease(_model("llm"), Deployment()) as second:
                assert first is second  # a language model batches inside its replica
            await engine.tick()  # idle_seconds=0, yet leased: it stays
            assert engine.is_loaded("llm")
            with pytest.raises(OverloadedError):  # no room while it is held
                await _submit(engine, 1, model="other")
        await _submit(engine, 2, model="other")  # released: it gives way
        assert not engine.is_loaded("llm")

    asyncio.run(main())
    # "other" started once while llm was held (and was stopped again: no room once
    # measured), then again once llm gave way.
    assert backend.started == ["llm", "other", "other"]


def test_idle_models_give_way_least_recently_used_and_pinned_ones_stay() -> None:
    backend = EchoBackend(memory=250)  # room for two replicas of 100 bytes
    metrics = EngineMetrics()
    engine = Engine(backend, metrics=metrics)
    pinned = Deployment(min_replicas=1)

    async def main() -> None:
        await engine.ensure(_model("pinned"), pinned)
        await _submit(engine, 1, model="b")
        await _submit(engine, 2, model="c")  # needs b's room: b was idle longest
        assert engine.is_loaded("pinned")
        assert engine.is_loaded("c")
        assert not engine.is_loaded("b")
        await _submit(engine, 3, model="b")  # c gives way now, never the pinned model
        assert engine.is_loaded("pinned")
        assert engine.is_loaded("b")
        assert not engine.is_loaded("c")
        assert engine.memory_used <= 250

    asyncio.run(main())
    assert backend.started == ["pinned", "b", "c", "b"]
    assert "openmaas_evictions_total" in metrics.render()[0].decode()


def test_cores_are_never_oversubscribed() -> None:
    backend = EchoBackend(cpu=2, seconds=0.05)
    engine = Engine(backend, EngineDefaults(max_batch_size=1))
    wide = Deployment(max_replicas=4, cpu=1)

    async def main() -> int:
        tasks = [asyncio.ensure_future(_submit(engine, v, deployment=wide)) for v in range(20)]
        peak = 0
        while not all(t.done() for t in tasks):
            peak = max(peak, engine.replicas("m"))
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        return peak

    assert asyncio.run(main()) == 2  # scaled up under load, but only to the 2 cores


def test_replicas_scale_to_zero_when_idle_and_come_back() -> None:
    backend = EchoBackend()
    engine = Engine(backend)
    lazy = Deployment(idle_seconds=0.05)

    async def main() -> None:
        await _submit(engine, 1, deployment=lazy)
        assert engine.replicas("m") == 1
        await asyncio.sleep(0.1)
        await engine.tick()
        assert engine.replicas("m") == 0
        assert engine.memory_used == 0
        again = await _submit(engine, 2, deployment=lazy)
        assert float(again[0, 0]) == 2
        assert engine.replicas("m") == 1

    asyncio.run(main())
    assert backend.started == ["m", "m"]
    assert backend.closed == 1


def test_drain_waits_for_queued_work_and_close_refuses_new() -> None:
    backend = EchoBackend(seconds=0.02)
    engine = Engine(backend, EngineDefaults(max_batch_size=1))

    async def main() -> None:
        work = [asyncio.ensure_future(_submit(engine, v, tenant=f"t{v}")) for v in range(10)]
        await asyncio.sleep(0)
        assert await engine.drain(0.01) is False  # not finished yet
        assert await engine.drain(5.0) is True
        assert [float(a[0, 0]) for a in await asyncio.gather(*work)] == list(range(10))
        await engine.close()
        with pytest.raises(DrainingError) as refused:
            await _submit(engine, 99)
        assert refused.value.retry_after >= 1

    asyncio.run(main())


def test_a_model_the_memory_budget_cannot_hold_is_refused_not_overcommitted() -> None:
    backend = EchoBackend(memory=250)
    backend.replica_memory = 300
    engine = Engine(backend)

    async def main() -> None:
        with pytest.raises(OverloadedError) as refused:
            await _submit(engine, 1)
        assert "OPENMAAS_MEMORY_BUDGET_BYTES" in refused.value.detail
        assert engine.memory_used == 0
        assert not engine.is_loaded("m")

    asyncio.run(main())
    assert backend.closed == 1


def test_a_deployment_asking_for_more_gpus_than_the_machine_has_is_refused() -> None:
    engine = Engine(EchoBackend())  # no GPUs

    async def main() -> None:
        with pytest.raises(OverloadedError) as refused:
            await _submit(engine, 1, deployment=Deployment(gpu=1))
        assert "GPU" in refused.value.detail
        assert engine.replicas("m") == 0

    asyncio.run(main())
