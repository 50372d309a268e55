"""What the engine keeps per model version: its queue, replicas and what it learned."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openmaas.errors import OpenMaaSError
from openmaas.explain.job import ExplainJob
from openmaas.serving.backends.base import ModelHandle, Replica
from openmaas.serving.batching import BatchKey
from openmaas.serving.deployment import Deployment
from openmaas.serving.scheduler import FairQueue

__all__ = ["EngineDefaults", "Runner", "Slot", "Work"]


@dataclass(frozen=True)
class EngineDefaults:
    """Server-wide defaults for what a deployment leaves unset."""

    max_batch_size: int = 32
    max_queue: int = 256
    idle_seconds: float = 300.0


@dataclass(eq=False)
class Work:
    """What a queued item carries."""

    inputs: Mapping[str, np.ndarray]
    outputs: Sequence[str]
    key: BatchKey | None
    future: asyncio.Future[Any]  # the outputs (or the explanation of ``job``)
    client_gone: Callable[[], bool] | None = None  # polled before the work runs
    job: ExplainJob | None = None  # an explanation to run instead of an inference


@dataclass(eq=False)
class Slot:
    replica: Replica
    cpu: float  # what the slot holds of the engine's accounting
    memory: int
    gpu: int
    busy: bool = False
    last_used: float = 0.0
    leases: int = 0  # callers scheduling their own work on it (Engine.lease)

    @property
    def in_use(self) -> bool:
        return self.busy or self.leases > 0


@dataclass(eq=False)
class Runner:
    """One model version's queue and replicas."""

    model: ModelHandle
    deployment: Deployment
    queue: FairQueue
    max_batch: int
    idle_seconds: float
    slots: list[Slot] = field(default_factory=list)
    starting: int = 0
    seconds_per_row: float = 0.0  # exponentially weighted, from finished batches
    memory_per_replica: int = 0
    last_used: float = 0.0
    dispatch_pending: bool = False
    failure: OpenMaaSError | None = None  # why the last start failed (for queued work)
    lease_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one start per lease rush

    @property
    def idle(self) -> bool:
        return not len(self.queue) and not any(s.in_use for s in self.slots)

    @property
    def pinned(self) -> bool:
        return self.deployment.min_replicas > 0
