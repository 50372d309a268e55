"""The serving engine: per-model fair queues, adaptive batching, replicas and a memory budget.

A request joins its model's ``FairQueue``. Whenever a replica is idle, the engine takes the
next items in fair order that can share one batch (same shapes, up to ``max_batch_size``
rows) and runs them together; requests that arrive while every replica is busy form the next
batch, so there is no waiting delay at low load. Replicas start on first use and while the
queue is backed up (up to ``max_replicas``, within the backend's cores and the memory
budget), and stop after ``idle_seconds`` down to ``min_replicas``; idle models give way,
least recently used first, when another model needs the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from openmaas.errors import (
    DeadlineExceededError,
    DrainingError,
    InvalidInputError,
    NotFoundError,
    OpenMaaSError,
    OverloadedError,
    TenantOverShareError,
    WorkerUnavailableError,
)
from openmaas.explain.job import ExplainJob, ExplainResult
from openmaas.serving.backends.base import Backend, ModelHandle, Replica
from openmaas.serving.batching import BatchKey, batch_key, merge, rows_of, split
from openmaas.serving.deployment import Deployment
from openmaas.serving.placement import Placement
from openmaas.serving.runner import EngineDefaults, Runner, Slot, Work
from openmaas.serving.scheduler import INTERACTIVE, FairQueue, QueueFullError, WorkItem

if TYPE_CHECKING:
    from openmaas.serving.metrics import EngineMetrics

__all__ = ["Engine", "EngineDefaults", "Work", "deadline_after"]

log = logging.getLogger(__name__)


class Engine(Placement):
    """Queues, schedules and batches work onto replicas the backend places."""

    def __init__(
        self,
        backend: Backend,
        defaults: EngineDefaults | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self._backend = backend
        self._defaults = defaults or EngineDefaults()
        self._metrics = metrics
        self._runners: dict[str, Runner] = {}
        self._cpu_used = 0.0
        self._memory_used = 0
        self._gpu_used = 0
        self._closed = False
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ requests

    async def submit(
        self,
        model: ModelHandle,
        deployment: Deployment,
        tenant: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        *,
        deadline: float,
        weight: float = 1.0,
        priority: int = INTERACTIVE,
        batchable: bool = True,
        client_gone: Callable[[], bool] | None = None,
    ) -> dict[str, np.ndarray]:
        """Queue one request and wait for its outputs until ``deadline`` (monotonic).

        Cancelling the caller drops the queued work; so does ``client_gone`` answering True
        when the work's turn comes (the caller then sees CancelledError).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        work = Work(
            inputs, outputs, batch_key(inputs, outputs) if batchable else None, future, client_gone
        )
        result: dict[str, np.ndarray] = await self._queue(
            model, deployment, tenant, work, rows_of(inputs) or 1, deadline, weight, priority
        )
        return result

    async def explain(
        self,
        model: ModelHandle,
        deployment: Deployment,
        tenant: str,
        job: ExplainJob,
        cost: int,
        *,
        deadline: float,
        weight: float = 1.0,
        priority: int = INTERACTIVE,
        client_gone: Callable[[], bool] | None = None,
    ) -> ExplainResult:
        """Queue an explanation like a request of ``cost`` rows (its model evaluations, so
        the fair scheduler charges the tenant for them); it runs alone on a replica."""
        future: asyncio.Future[ExplainResult] = asyncio.get_running_loop().create_future()
        work = Work({}, (), None, future, client_gone, job)
        result: ExplainResult = await self._queue(
            model, deployment, tenant, work, max(1, cost), deadline, weight, priority, admit=False
        )
        return result

    async def _queue(
        self,
        model: ModelHandle,
        deployment: Deployment,
        tenant: str,
        work: Work,
        rows: int,
        deadline: float,
        weight: float,
        priority: int,
        admit: bool = True,
    ) -> Any:
        runner = self._runner(model, deployment)
        if self._closed:
            self._reject(runner, "draining")
            raise DrainingError("the server is shutting down; retry on another replica")
        now = time.monotonic()
        runner.last_used = now
        if admit:  # an explanation's rows are evaluations in big batches: no row estimate
            self._admit_by_deadline(runner, tenant, weight, rows, now, deadline)
        loop = asyncio.get_running_loop()
        future = work.future
        item = WorkItem(tenant, float(rows), weight, priority, deadline, work)
        try:
            displaced = runner.queue.offer(item)
        except QueueFullError as full:
            raise self._refusal(runner, full.reason, tenant) from None
        if displaced is not None:
            self._fail(displaced, self._refusal(runner, "over_share", displaced.tenant))
        self._schedule_dispatch(runner)
        timer = None
        if math.isfinite(deadline):
            timer = loop.call_later(deadline - now, self._expire, runner, item, deadline - now)
        try:
            return await future
        except asyncio.CancelledError:
            item.dropped = True  # the client went away: its queued work never runs
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, runner: Runner, item: WorkItem, seconds: float) -> None:
        """The deadline passed, queued or running: answer 504 now, drop the work."""
        if item.payload.future.done():
            return
        item.dropped = True
        self._reject(runner, "deadline")
        self._fail(
            item,
            DeadlineExceededError(
                f"no answer within the request's deadline ({seconds:.3f} s); raise the "
                "timeout or retry later"
            ),
        )

    def _admit_by_deadline(
        self, runner: Runner, tenant: str, weight: float, rows: int, now: float, deadline: float
    ) -> None:
        """Refuse at once what cannot finish in time, given the work queued ahead of it."""
        if not runner.seconds_per_row:
            return
        own = runner.queue.queued(tenant)
        ahead = len(runner.queue) if own else 0
        if not own:  # a newcomer is served within one round of the backlogged tenants
            ahead = min(len(runner.queue), runner.queue.share(tenant, weight))
        replicas = max(1, len(runner.slots))
        wait = (ahead + rows) * runner.seconds_per_row / replicas
        if now + wait <= deadline:
            return
        reason = "over_share" if own and own >= runner.queue.share(tenant, weight) else "deadline"
        raise self._refusal(runner, reason, tenant, wait)

    def _refusal(
        self, runner: Runner, reason: str, tenant: str, wait: float | None = None
    ) -> OpenMaaSError:
        self._reject(runner, "queue_full" if reason == "full" else reason)
        retry = max(1.0, wait if wait is not None else self._backlog_seconds(runner))
        name = runner.model.name
        if reason == "over_share":
            return TenantOverShareError(
                f"tenant {tenant!r} already has its share of {name}'s queue waiting; slow "
                f"down and retry in {retry:.0f} s",
                retry_after=retry,
            )
        if reason == "full":
            return OverloadedError(
                f"{name}'s queue is full ({runner.queue.capacity} requests); retry in "
                f"{retry:.0f} s",
                retry_after=retry,
            )
        return OverloadedError(
            f"{name} cannot answer before the request's deadline (about {wait or retry:.2f} s of "
            "work, this request's included, is ahead); retry later or allow a longer timeout",
            retry_after=retry,
        )

    def _backlog_seconds(self, runner: Runner) -> float:
        return len(runner.queue) * runner.seconds_per_row / max(1, len(runner.slots))

    def _reject(self, runner: Runner, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected(runner.model.name, reason)

    @staticmethod
    def _fail(item: WorkItem, error: BaseException) -> None:
        future = item.payload.future
        if not future.done():
            future.set_exception(error)

    @contextlib.asynccontextmanager
    async def lease(self, model: ModelHandle, deployment: Deployment) -> AsyncIterator[Replica]:
        """A live replica for work its caller schedules itself (language models, which
        batch inside their own slots). It is started if needed, within the same cores and
        memory budget, and is neither evicted nor scaled down while leased."""
        runner = self._runner(model, deployment)
        if self._closed:
            raise DrainingError("the server is shutting down; retry on another replica")
        async with runner.lease_lock:
            slot = self._live_slot(runner)
            if slot is None:
                await self._start_replica(runner)
                slot = self._live_slot(runner)
            if slot is None:
                raise runner.failure or OverloadedError(
                    f"{model.name} could not be started now; retry later", retry_after=5.0
                )
            slot.leases += 1
        slot.last_used = runner.last_used = time.monotonic()
        try:
            yield slot.replica
        finally:
            slot.leases -= 1
            slot.last_used = runner.last_used = time.monotonic()
            if not slot.replica.alive:
                self._replace(runner, slot)

    @staticmethod
    def _live_slot(runner: Runner) -> Slot | None:
        live = [s for s in runner.slots if s.replica.alive]
        return min(live, key=lambda s: s.leases) if live else None

    # ------------------------------------------------------------------ runners

    def _runner(self, model: ModelHandle, deployment: Deployment) -> Runner:
        runner = self._runners.get(model.key)
        if runner is None:
            runner = Runner(
                model,
                deployment,
                FairQueue(deployment.max_queue or self._defaults.max_queue),
                deployment.max_batch_size or self._defaults.max_batch_size,
                self._idle_seconds(deployment),
            )
            self._runners[model.key] = runner
        elif runner.deployment is not deployment and runner.deployment != deployment:
            runner.deployment = deployment
            runner.queue.capacity = deployment.max_queue or self._defaults.max_queue
            runner.max_batch = deployment.max_batch_size or self._defaults.max_batch_size
            runner.idle_seconds = self._idle_seconds(deployment)
        return runner

    def _idle_seconds(self, deployment: Deployment) -> float:
        if deployment.idle_seconds is None:
            return self._defaults.idle_seconds
        return deployment.idle_seconds

    def is_loaded(self, key: str) -> bool:
        """Whether the model version has a replica now."""
        runner = self._runners.get(key)
        return runner is not None and any(s.replica.alive for s in runner.slots)

    def replicas(self, key: str) -> int:
        """Live replicas of the model version."""
        runner = self._runners.get(key)
        return sum(1 for s in runner.slots if s.replica.alive) if runner else 0

    def queue_depth(self, key: str) -> int:
        runner = self._runners.get(key)
        return len(runner.queue) if runner else 0

    @property
    def memory_used(self) -> int:
        return self._memory_used

    def deploy(self, model: ModelHandle, deployment: Deployment) -> None:
        """Apply a changed deployment now; its minimum replicas start in the background."""
        self._spawn(self.ensure(model, deployment))

    async def ensure(self, model: ModelHandle, deployment: Deployment) -> None:
        """Start a model's minimum replicas now (pinned models at start-up)."""
        runner = self._runner(model, deployment)
        while len(runner.slots) + runner.starting < deployment.min_replicas:
            if not await self._start_replica(runner):
                break

    def forget(self, keys: list[str]) -> None:
        """Stop these model versions (from any thread): they stop serving at once."""
        if self._loop is None or self._loop.is_closed():
            return  # never started: nothing is loaded
        coroutine = self.evict(keys)
        if self._loop_is_current():
            self._spawn(coroutine)
        else:
            asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _loop_is_current(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def evict(self, keys: list[str]) -> None:
        """Stop these model versions now (after an erasure); queued work gets 404."""
        for key in keys:
            runner = self._runners.pop(key, None)
            if runner is None:
                continue
            for item in runner.queue.drain():
                self._fail(item, NotFoundError(f"{runner.model.name} was removed"))
            await self._stop_runner(runner)
            if self._metrics is not None:
                self._metrics.forget_model(runner.model.name)

    # ------------------------------------------------------------------ dispatch

    def _schedule_dispatch(self, runner: Runner) -> None:
        """Dispatch after the requests readable in this loop turn have queued too."""
        if not runner.dispatch_pending:
            runner.dispatch_pending = True
            asyncio.get_running_loop().call_soon(self._dispatch, runner)

    def _dispatch(self, runner: Runner) -> None:
        runner.dispatch_pending = False
        if self._runners.get(runner.model.key) is not runner:
            return
        for slot in runner.slots:
            if not len(runner.queue):
                break
            if slot.busy or not slot.replica.alive:
                continue
            while len(runner.queue) and not slot.busy:
                batch = self._take_batch(runner)
                if not batch:
                    break
                if not self._run_now(runner, slot, batch):
                    slot.busy = True
                    self._spawn(self._run_batch(runner, slot, batch))
        if len(runner.queue) and self._wants_replica(runner):
            self._spawn(self._scale_up(runner))

    def _run_now(self, runner: Runner, slot: Slot, items: list[WorkItem]) -> bool:
        """Run a batch right here if the replica says that is cheapest; False if not."""
        live = [item for item in items if not item.dropped and not item.payload.future.done()]
        if not live:
            return True
        works: list[Work] = [item.payload for item in live]
        if works[0].job is not None:
            return False  # explanations run off the event loop
        started = time.monotonic()
        try:
            result = slot.replica.run_now(merge([w.inputs for w in works]), works[0].outputs)
        except InvalidInputError as invalid:
            if len(live) > 1:
                return False  # the async path finds the request at fault
            self._fail(live[0], invalid)
            return True
        except OpenMaaSError as error:
            for item in live:
                self._fail(item, error)
            return True
        if result is None:
            return False
        parts = split(result, [int(item.cost) for item in live])
        if parts is None:
            return False  # the async path runs them one by one
        for work, part in zip(works, parts, strict=True):
            if not work.future.done():
                work.future.set_result(part)
        self._finished(runner, slot, live, started)
        return True

    def _wants_replica(self, runner: Runner) -> bool:
        live = sum(1 for s in runner.slots if s.replica.alive)
        if live + runner.starting >= runner.deployment.max_replicas:
            return False
        if runner.starting:
            return False  # one start at a time per model
        return not live or all(s.busy for s in runner.slots if s.replica.alive)

    def _take_batch(self, runner: Runner) -> list[WorkItem]:
        now = time.monotonic()
        batch: list[WorkItem] = []
        rows = 0.0
        key: BatchKey | None = None

        def fits(item: WorkItem) -> bool:
            if not batch:
                return True
            work: Work = item.payload
            return work.key is not None and work.key == key and rows + item.cost <= runner.max_batch

        while True:
            item = runner.queue.pop(fits)
            if item is None:
                return batch
            if item.deadline <= now:
                self._fail(item, DeadlineExceededError("the deadline passed while queued"))
                continue
            gone = item.payload.client_gone
            if gone is not None and gone():
                item.payload.future.cancel()  # nobody is left to answer: never run it
                continue
            if not batch:
                key = item.payload.key
            batch.append(item)
            rows += item.cost
            if key is None or rows >= runner.max_batch:
                return batch

    def _spawn(self, coroutine: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, runner: Runner, slot: Slot, batch: list[WorkItem]) -> None:
        started = time.monotonic()
        live = [item for item in batch if not item.dropped and not item.payload.future.done()]
        try:
            if live:
                await self._execute(runner, slot, live)
        finally:
            slot.busy = False
            self._finished(runner, slot, live, started)
            self._dispatch(runner)
            self._place_waiting()

    def _finished(self, runner: Runner, slot: Slot, items: list[WorkItem], started: float) -> None:
        """Learn the model's speed from a finished batch and count the work served."""
        finished = time.monotonic()
        slot.last_used = runner.last_used = finished
        if not items:
            return
        if items[0].payload.job is not None:  # evaluations in big batches: not a row's speed
            self._record(runner, items, finished - started)
            return
        per_row = (finished - started) / sum(item.cost for item in items)
        previous = runner.seconds_per_row
        runner.seconds_per_row = per_row if not previous else previous * 0.8 + per_row * 0.2
        self._record(runner, items, finished - started)

    async def _execute(self, runner: Runner, slot: Slot, items: list[WorkItem]) -> None:
        works: list[Work] = [item.payload for item in items]
        job = works[0].job
        if job is not None:
            await self._explain(runner, slot, items[0], job)
            return
        outputs = works[0].outputs
        try:
            result = await slot.replica.run(merge([w.inputs for w in works]), outputs)
            parts = split(result, [int(item.cost) for item in items])
            if parts is None:  # the model does not keep the batch dimension: one at a time
                runner.max_batch = 1
                parts = [await slot.replica.run(w.inputs, outputs) for w in works]
        except WorkerUnavailableError as lost:
            for item in items:
                self._fail(item, lost)
            self._replace(runner, slot)
            return
        except InvalidInputError as invalid:
            if len(items) > 1:  # one bad request must not fail its batch-mates
                for item in items:
                    await self._execute(runner, slot, [item])
                return
            self._fail(items[0], invalid)
            return
        except OpenMaaSError as error:
            for item in items:
                self._fail(item, error)
            return
        for work, part in zip(works, parts, strict=True):
            if not work.future.done():
                work.future.set_result(part)

    async def _explain(self, runner: Runner, slot: Slot, item: WorkItem, job: ExplainJob) -> None:
        try:
            explanation = await slot.replica.explain(job)
        except WorkerUnavailableError as lost:
            self._fail(item, lost)
            self._replace(runner, slot)
            return
        except OpenMaaSError as error:
            self._fail(item, error)
            return
        if not item.payload.future.done():
            item.payload.future.set_result(explanation)

    def _record(self, runner: Runner, items: list[WorkItem], seconds: float) -> None:
        if self._metrics is None:
            return
        name = runner.model.name
        total = sum(item.cost for item in items)
        self._metrics.observe_batch(name, int(total))
        served: dict[str, list[float]] = {}  # tenant -> [requests, rows]
        for item in items:
            counts = served.setdefault(item.tenant, [0, 0.0])
            counts[0] += 1
            counts[1] += item.cost
        for tenant, (requests, rows) in served.items():
            share = seconds * rows / total
            self._metrics.served(tenant, name, int(rows), share, int(requests))

    # ------------------------------------------------------------------ lifecycle

    def start(self, period: float = 0.25) -> None:
        """Start the background scale-down of idle replicas."""
        self._loop = asyncio.get_running_loop()
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever(period))

    async def _tick_forever(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await self.tick()
            except Exception:
                log.exception("engine tick failed")

    async def tick(self) -> None:
        """Scale idle replicas down, drop idle unpinned models, restore pinned minimums."""
        now = time.monotonic()
        for runner in list(self._runners.values()):
            idle_slots = [s for s in runner.slots if not s.in_use and not len(runner.queue)]
            excess = len(runner.slots) - runner.deployment.min_replicas
            for slot in sorted(idle_slots, key=lambda s: s.last_used)[: max(0, excess)]:
                if now - slot.last_used >= runner.idle_seconds:
                    await self._stop_slot(runner, slot)
            live = sum(1 for s in runner.slots if s.replica.alive)
            if live + runner.starting < runner.deployment.min_replicas:
                self._spawn(self._scale_up(runner))
            if not runner.slots and not runner.starting and runner.idle:
                self._runners.pop(runner.model.key, None)
            if self._metrics is not None:
                self._metrics.set_queue_depth(runner.model.name, len(runner.queue))

    async def drain(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for queued and running work to finish; True if it did."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(r.idle for r in self._runners.values()):
                return True
            await asyncio.sleep(0.01)
        return all(r.idle for r in self._runners.values())

    async def close(self) -> None:
        """Fail queued work, stop every replica and the backend."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        for runner in list(self._runners.values()):
            for item in runner.queue.drain():
                self._fail(item, DrainingError("the server stopped"))
            await self._stop_runner(runner)
        self._runners.clear()
        for task in list(self._tasks):
            task.cancel()
        await self._backend.close()


def deadline_after(seconds: float) -> float:
    """A monotonic deadline ``seconds`` from now (inf for no limit)."""
    return time.monotonic() + seconds if math.isfinite(seconds) else math.inf
