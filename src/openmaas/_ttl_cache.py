"""A small thread-safe cache whose entries expire after a fixed time (metadata hot path)."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["TTLCache"]

V = TypeVar("V")


class TTLCache(Generic[V]):
    """Entries live ``ttl`` seconds; ``clear`` drops all at once (after any write)."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        """The live value under ``key``, or None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: Hashable, value: V) -> None:
        """Remember ``value`` for ``ttl`` seconds (a zero ttl remembers nothing)."""
        if self._ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self._ttl, value)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()
