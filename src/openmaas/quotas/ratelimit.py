"""Token buckets in memory: a sustained rate with a bounded burst, per key and per tenant."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """Holds up to ``capacity`` tokens, refilled at ``rate`` per second."""

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def take(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; return 0 on success, else seconds until they would be there."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate


class RateLimiter:
    """One bucket per name (e.g. ``key:<id>``), created on first use."""

    def __init__(
        self,
        rate: float,
        burst_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate * burst_seconds)
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[Hashable, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, name: Hashable, cost: float = 1.0) -> float:
        """Charge ``name``; return 0 when allowed, else the seconds to wait."""
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                if len(self._buckets) >= self._max_buckets:
                    self._buckets.clear()  # idle buckets are full anyway: forgetting is safe
                bucket = self._buckets[name] = TokenBucket(self._rate, self._capacity, self._clock)
            return bucket.take(cost)
