"""Where replicas live: start them within cores, GPUs and the memory budget, evict idle ones.

``Engine`` inherits this: it decides when a model needs a replica; this part claims the
resources (evicting the least recently used idle model when needed), starts and stops
replicas, replaces dead ones and keeps the accounting and metrics of what they hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from openmaas.errors import OpenMaaSError, OverloadedError, WorkerUnavailableError
from openmaas.serving.backends.base import Backend, Replica
from openmaas.serving.runner import Runner, Slot

if TYPE_CHECKING:
    from openmaas.serving.metrics import EngineMetrics
    from openmaas.serving.scheduler import WorkItem

__all__ = ["Placement"]

log = logging.getLogger("openmaas.serving.engine")


class Placement:
    """Replica placement and resource accounting (the engine's half that owns replicas)."""

    _backend: Backend
    _metrics: EngineMetrics | None
    _runners: dict[str, Runner]
    _cpu_used: float
    _memory_used: int
    _gpu_used: int
    _tasks: set[asyncio.Task[None]]

    if TYPE_CHECKING:

        def _dispatch(self, runner: Runner) -> None: ...

        @staticmethod
        def _fail(item: WorkItem, error: BaseException) -> None: ...

    def _spawn(self, coroutine: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scale_up(self, runner: Runner) -> None:
        started = await self._start_replica(runner)
        if not started and not runner.slots and runner.failure is not None:
            for item in runner.queue.drain():
                self._fail(item, runner.failure)
        self._dispatch(runner)

    def _reserve(self, runner: Runner) -> bool:
        """Claim cores and memory for one more replica, evicting idle models if needed."""
        capacity = self._backend.capacity()
        cpu = runner.deployment.cpu
        memory = runner.deployment.memory_bytes or runner.memory_per_replica
        cpu_fits = min(cpu, capacity.cpu)  # a replica wider than the machine gets all of it
        gpu = runner.deployment.gpu
        if gpu > capacity.gpu:
            runner.failure = OverloadedError(
                f"{runner.model.name} needs {gpu} GPU(s) per replica and this server has "
                f"{capacity.gpu}; lower the deployment's gpu or serve it where GPUs are"
            )
            return False
        while (
            self._cpu_used + cpu_fits > capacity.cpu + 1e-9
            or self._memory_used + memory > capacity.memory_bytes
            or self._gpu_used + gpu > capacity.gpu
        ):
            if not self._release_idle(exclude=runner):
                return False
        self._cpu_used += cpu_fits
        self._memory_used += memory
        self._gpu_used += gpu
        return True

    def _release_idle(self, exclude: Runner) -> bool:
        """Stop one idle replica of the least recently used other model; False if none."""
        candidates = [
            r
            for r in self._runners.values()
            if r is not exclude
            and r.idle
            and not r.starting
            and len(r.slots) > r.deployment.min_replicas
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda r: r.last_used)
        slot = min(victim.slots, key=lambda s: s.last_used)
        self._spawn(self._close(victim, self._detach(victim, slot)))
        if self._metrics is not None:
            self._metrics.evicted(victim.model.name)
        return True

    async def _start_replica(self, runner: Runner) -> bool:
        if not self._reserve(runner):
            return False
        reserved_cpu = min(runner.deployment.cpu, self._backend.capacity().cpu)
        reserved_memory = runner.deployment.memory_bytes or runner.memory_per_replica
        reserved_gpu = runner.deployment.gpu
        runner.starting += 1
        slot: Slot | None = None
        began = time.monotonic()
        try:
            replica = await self._backend.start_replica(
                runner.model, runner.deployment, lambda: self._lost(runner)
            )
            measured = replica.memory_bytes
            slot = Slot(replica, reserved_cpu, measured, reserved_gpu, last_used=time.monotonic())
        except OpenMaaSError as error:
            runner.failure = error
            log.warning("could not start %s: %s", runner.model.name, error.detail)
        except Exception as error:
            runner.failure = WorkerUnavailableError(f"{runner.model.name} failed to start")
            log.exception("could not start %s: %s", runner.model.name, error)
        finally:
            runner.starting -= 1
        if slot is None:
            self._cpu_used -= reserved_cpu
            self._memory_used -= reserved_memory
            self._gpu_used -= reserved_gpu
            return False
        self._memory_used += slot.memory - reserved_memory
        runner.memory_per_replica = max(runner.memory_per_replica, slot.memory)
        runner.failure = None
        runner.slots.append(slot)
        if self._runners.get(runner.model.key) is not runner:  # evicted while loading
            await self._close(runner, self._detach(runner, slot))
            return False
        budget = self._backend.capacity().memory_bytes
        while self._memory_used > budget:
            if not self._release_idle(exclude=runner):
                await self._close(runner, self._detach(runner, slot))
                runner.failure = OverloadedError(
                    f"{runner.model.name} needs {slot.memory} bytes of memory and the "
                    f"budget has no room for it now (OPENMAAS_MEMORY_BUDGET_BYTES is {budget}); "
                    "retry when other models are idle"
                )
                return False
        if self._metrics is not None:
            self._metrics.cold_start(runner.model.name, time.monotonic() - began)
            self._publish_replicas(runner)
        return True

    def _lost(self, runner: Runner) -> None:
        """A replica died on its own: the next dispatch replaces it."""
        loop = asyncio.get_running_loop()
        loop.call_soon(self._sweep_dead, runner)

    def _sweep_dead(self, runner: Runner) -> None:
        for slot in [s for s in runner.slots if not s.replica.alive and not s.in_use]:
            self._replace(runner, slot)

    def _replace(self, runner: Runner, slot: Slot) -> None:
        if slot not in runner.slots:
            return
        self._spawn(self._close(runner, self._detach(runner, slot)))
        if self._metrics is not None:
            self._metrics.worker_restarted(runner.model.name)
        if self._runners.get(runner.model.key) is runner and (
            len(runner.queue) or len(runner.slots) < runner.deployment.min_replicas
        ):
            self._spawn(self._scale_up(runner))

    async def _stop_slot(self, runner: Runner, slot: Slot) -> None:
        await self._close(runner, self._detach(runner, slot))

    def _detach(self, runner: Runner, slot: Slot) -> Replica | None:
        """Take a slot out of service and give back what it held; the caller closes it."""
        if slot not in runner.slots:
            return None
        runner.slots.remove(slot)
        self._cpu_used -= slot.cpu
        self._memory_used -= slot.memory
        self._gpu_used -= slot.gpu
        self._publish_replicas(runner)
        return slot.replica

    async def _close(self, runner: Runner, replica: Replica | None) -> None:
        if replica is None:
            return
        try:
            await replica.close()
        except Exception:
            log.exception("closing a replica of %s failed", runner.model.name)

    def _publish_replicas(self, runner: Runner) -> None:
        if self._metrics is None:
            return
        if runner.slots:
            memory = sum(s.replica.memory_bytes for s in runner.slots)
            self._metrics.set_loaded(runner.model.name, len(runner.slots), memory)
        else:
            self._metrics.set_unloaded(runner.model.name)

    def _place_waiting(self) -> None:
        """Models with queued work but no replica get a chance when capacity frees up."""
        for runner in self._runners.values():
            if len(runner.queue) and not runner.slots and not runner.starting:
                self._spawn(self._scale_up(runner))

    async def _stop_runner(self, runner: Runner) -> None:
        for slot in list(runner.slots):
            await self._stop_slot(runner, slot)
