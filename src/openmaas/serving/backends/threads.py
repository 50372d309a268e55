"""Run models in a thread pool of this process, with an LRU cache of loaded runtimes.

onnxruntime releases the GIL while it computes, so threads give real parallelism; the event
loop only awaits. The serving-engine work replaces this with worker processes.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from openmaas.errors import InferenceError, InvalidInputError, OpenMaaSError
from openmaas.runtimes import Runtime, load_runtime
from openmaas.serving.backends.base import ModelHandle

__all__ = ["ThreadBackend"]

_INPUT_FAULTS = frozenset({"InvalidArgument", "Fail"})
_SOURCE_PATH = re.compile(r"\S*/\S+\.(?:h|cc|cpp|c):\d+\s*")


def _public_message(exc: Exception) -> str:
    """The runtime's message without its source paths, in one bounded line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return _SOURCE_PATH.sub("", text)[:500]


class ThreadBackend:
    """Models loaded in this process, run on a bounded thread pool."""

    def __init__(self, threads: int, cache_size: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="infer")
        self._cache_size = cache_size
        self._loaded: OrderedDict[str, Runtime] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def is_loaded(self, key: str) -> bool:
        return key in self._loaded

    def evict(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._loaded.pop(key, None)

    def _runtime(self, model: ModelHandle) -> Runtime:
        with self._lock:
            runtime = self._loaded.get(model.key)
            if runtime is not None:
                self._loaded.move_to_end(model.key)
                return runtime
            load_lock = self._loading.setdefault(model.key, threading.Lock())
        with load_lock:  # one load per model even when many requests arrive at once
            with self._lock:
                runtime = self._loaded.get(model.key)
            if runtime is None:
                runtime = load_runtime(model.format, model.fetch())
                with self._lock:
                    self._loaded[model.key] = runtime
                    while len(self._loaded) > self._cache_size:
                        # Dropped, not unloaded: a request may still hold it; memory is
                        # freed when the last one finishes.
                        self._loaded.popitem(last=False)
                    self._loading.pop(model.key, None)
            return runtime

    def _run(
        self, model: ModelHandle, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        runtime = self._runtime(model)
        try:
            return runtime.predict(inputs, outputs)
        except OpenMaaSError:
            raise
        except Exception as exc:
            # Inputs already fit the signature, so onnxruntime's INVALID_ARGUMENT and FAIL
            # statuses come from the values (e.g. batch sizes that differ between inputs).
            message = _public_message(exc)
            if type(exc).__name__ in _INPUT_FAULTS:
                raise InvalidInputError(f"the model rejected the input: {message}") from exc
            raise InferenceError(f"the model failed while running: {message}") from exc

    async def predict(
        self, model: ModelHandle, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, model, inputs, outputs)

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for runtime in self._loaded.values():
                runtime.unload()
            self._loaded.clear()
