"""Language-model token quotas per API key: tokens per minute and per UTC day.

A request is admitted while the key has tokens left; what it used (prompt + completion) is
counted when it ends, so one request may overdraw and the next ones wait. The minute quota is
a bucket that refills continuously; the day's count lives in the usage meter (persisted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from openmaas.errors import TokenQuotaExceededError
from openmaas.quotas.usage import UsageMeter, seconds_until_tomorrow

__all__ = ["TokenBudget", "token_scopes"]


def token_scopes(key_id: str, tenant_id: int, model_id: str) -> list[str]:
    """The usage scopes one request's tokens count in: its key, tenant and model."""
    return [f"tokens:key:{key_id}", f"tokens:tenant:{tenant_id}", f"tokens:model:{model_id}"]


class TokenBudget:
    """Checks and counts the tokens of each API key."""

    def __init__(
        self,
        meter: UsageMeter,
        per_minute: int | None,
        per_day: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._meter = meter
        self._per_minute = per_minute
        self._per_day = per_day
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, at)
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        """Raise TokenQuotaExceededError (429, with Retry-After) if the key has none left."""
        if self._per_minute is not None:
            with self._lock:
                level = self._level(key_id)
            if level <= 0:
                wait = max(1.0, -level / (self._per_minute / 60) + 1e-3)
                raise TokenQuotaExceededError(
                    f"API key {key_id} used its {self._per_minute} tokens per minute; retry "
                    f"in {wait:.0f} s",
                    retry_after=wait,
                )
        if self._per_day is not None:
            used = self._meter.count(f"tokens:key:{key_id}")
            if used >= self._per_day:
                wait = seconds_until_tomorrow(self._meter.now())
                raise TokenQuotaExceededError(
                    f"API key {key_id} used its {self._per_day} tokens for today ({used}); "
                    f"the quota resets at 00:00 UTC (in {wait:.0f} s)",
                    retry_after=wait,
                )

    def consume(self, scopes: list[str], key_id: str, tokens: int) -> None:
        """Count the tokens a finished (or stopped) request used."""
        if tokens <= 0:
            return
        self._meter.add(scopes, tokens)
        if self._per_minute is not None:
            with self._lock:
                level = self._level(key_id)
                self._buckets[key_id] = (level - tokens, self._clock())

    def _level(self, key_id: str) -> float:
        """The key's bucket now, refilled (the caller holds the lock)."""
        assert self._per_minute is not None  # noqa: S101 - callers check
        now = self._clock()
        level, at = self._buckets.get(key_id, (float(self._per_minute), now))
        level = min(float(self._per_minute), level + (now - at) * self._per_minute / 60)
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        self._buckets[key_id] = (level, now)
        return level
