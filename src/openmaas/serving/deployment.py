"""How a model version is deployed: replicas, batching, queue, resources and isolation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from openmaas.errors import RequestValidationError

__all__ = ["ISOLATIONS", "Deployment"]

ISOLATIONS = ("auto", "inline", "process")


@dataclass(frozen=True)
class Deployment:
    """Per-model serving settings; ``None`` fields take the server's defaults."""

    min_replicas: int = 0  # >= 1 pins the model: loaded at start, never evicted
    max_replicas: int = 1
    max_batch_size: int | None = None
    max_queue: int | None = None
    cpu: float = 1.0  # cores reserved per replica
    memory_bytes: int | None = None  # declared need per replica; else measured after load
    gpu: int = 0
    idle_seconds: float | None = None  # scale down (to min_replicas) after this long idle
    isolation: str = "auto"  # auto: data-only formats in the server process, others in workers

    def __post_init__(self) -> None:
        problems = []
        if self.min_replicas < 0:
            problems.append("min_replicas must be >= 0")
        if self.max_replicas < max(1, self.min_replicas):
            problems.append("max_replicas must be >= 1 and >= min_replicas")
        if self.max_batch_size is not None and not 1 <= self.max_batch_size <= 4096:
            problems.append("max_batch_size must be between 1 and 4096")
        if self.max_queue is not None and not 1 <= self.max_queue <= 100_000:
            problems.append("max_queue must be between 1 and 100000")
        if not 0 < self.cpu <= 1024:
            problems.append("cpu must be > 0 cores")
        if self.memory_bytes is not None and self.memory_bytes < 0:
            problems.append("memory_bytes must be >= 0")
        if self.gpu < 0:
            problems.append("gpu must be >= 0")
        if self.idle_seconds is not None and self.idle_seconds < 0:
            problems.append("idle_seconds must be >= 0")
        if self.isolation not in ISOLATIONS:
            problems.append(f"isolation must be one of {', '.join(ISOLATIONS)}")
        if problems:
            raise RequestValidationError("; ".join(problems), field="deployment")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Deployment:
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def updated(self, **changes: Any) -> Deployment:
        return replace(self, **changes)
