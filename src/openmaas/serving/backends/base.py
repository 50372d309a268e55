"""The ``Backend`` seam: run a model version on named arrays, wherever it lives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["Backend", "ModelHandle"]


@dataclass(frozen=True)
class ModelHandle:
    """Enough to load a model version anywhere: its format and how to fetch its bytes."""

    key: str
    format: str
    fetch: Callable[[], bytes]


class Backend(Protocol):
    """Runs inference for the data plane."""

    async def predict(
        self, model: ModelHandle, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Load ``model`` if needed and run it; raise OpenMaaSError subclasses on failure."""
        ...

    def is_loaded(self, key: str) -> bool:
        """Whether the model version is loaded now."""
        ...

    def evict(self, keys: list[str]) -> None:
        """Unload these model versions now (after an erasure); later calls reload them."""
        ...

    async def close(self) -> None:
        """Stop accepting work and release every model."""
        ...
