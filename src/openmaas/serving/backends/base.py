"""The ``Backend`` seam: start model replicas wherever they live (threads, processes, Ray).

The engine above it queues, schedules and batches; a backend only places replicas within
its capacity and runs batches on them. Nothing outside this package knows how.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from openmaas.explain.job import ExplainJob, ExplainResult
from openmaas.serving.deployment import Deployment

__all__ = ["Backend", "ModelHandle", "Replica", "Resources"]


@dataclass(frozen=True)
class ModelHandle:
    """Enough to load a model version anywhere: its format and how to fetch its bytes."""

    key: str  # the version's identity (its blob digest)
    name: str  # tenant/name:version, for metrics and logs
    format: str
    fetch: Callable[[], bytes]


@dataclass(frozen=True)
class Resources:
    """Cores, bytes of memory and GPUs: what a machine offers or a replica needs."""

    cpu: float
    memory_bytes: int
    gpu: int = 0


class Replica(Protocol):
    """One loaded copy of a model that runs one batch at a time."""

    async def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run a batch; raise OpenMaaSError subclasses (503 WorkerUnavailableError if lost)."""
        ...

    def run_now(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray] | None:
        """Run a batch on the calling thread if that is cheaper than ``run``; else None
        (e.g. the replica is remote, or the batch would hold the event loop too long)."""
        ...

    async def explain(self, job: ExplainJob) -> ExplainResult:
        """Explain ``job``'s rows with this replica's model, off the event loop; raise
        OpenMaaSError subclasses (422 when the method cannot explain it)."""
        ...

    async def generate(
        self,
        kind: str,
        body: Mapping[str, Any],
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Language models: run an OpenAI-shaped ``chat`` or ``completion`` request; a
        streamed one (``"stream": true``) passes each chunk to ``on_chunk``. Other replicas
        raise WrongModelTaskError."""
        ...

    @property
    def memory_bytes(self) -> int:
        """Memory the replica holds, measured after loading."""
        ...

    @property
    def alive(self) -> bool:
        """False once the replica died or was closed."""
        ...

    async def close(self) -> None:
        """Release the replica (idempotent)."""
        ...


class Backend(Protocol):
    """Places replicas on compute."""

    def capacity(self) -> Resources:
        """What replicas may use in all."""
        ...

    async def start_replica(
        self, model: ModelHandle, deployment: Deployment, on_exit: Callable[[], None]
    ) -> Replica:
        """Load ``model`` into a new replica; ``on_exit`` is called if it dies on its own."""
        ...

    async def close(self) -> None:
        """Release everything the backend holds."""
        ...
