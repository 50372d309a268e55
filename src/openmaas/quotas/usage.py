"""Daily request counters per scope, counted in memory and written behind to the database.

Counting happens on the request path without a database write; ``flush`` (called every
second by the server, and at shutdown) persists the counts, so a crash loses at most the
last second of counts, never more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from openmaas.store.db import Database
from openmaas.store.tables import UsageCounter

__all__ = ["UsageMeter", "seconds_until_tomorrow", "utc_day"]


def utc_day(now: datetime) -> str:
    """The UTC calendar day of ``now`` as YYYY-MM-DD."""
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def seconds_until_tomorrow(now: datetime) -> float:
    """Seconds until the next UTC midnight, when daily quotas reset."""
    now = now.astimezone(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


class UsageMeter:
    """Counts requests per (scope, UTC day)."""

    def __init__(self, db: Database, clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._system_clock = clock is None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._day_ends = 0.0  # with the system clock: when the cached day is over (epoch s)
        self._counts: dict[tuple[str, str], int] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._day: tuple[object, str] = (None, "")

    def _today(self) -> str:
        """The UTC day of the clock, formatted once per day (it runs on every request)."""
        if self._system_clock and time.time() < self._day_ends:
            return self._day[1]
        now = self._clock().astimezone(UTC)
        date = now.date()
        self._day_ends = time.time() + seconds_until_tomorrow(now)
        if self._day[0] != date:
            self._day = (date, date.isoformat())
        return self._day[1]

    def now(self) -> datetime:
        """The meter's current time."""
        return self._clock()

    def _load(self, key: tuple[str, str]) -> int:
        with self._db.session() as session:
            row = session.get(UsageCounter, {"scope": key[0], "day": key[1]})
            return 0 if row is None else row.requests

    def count(self, scope: str) -> int:
        """Requests counted today for ``scope``."""
        key = (scope, utc_day(self._clock()))
        with self._lock:
            if key not in self._counts:
                self._counts[key] = self._load(key)
            return self._counts[key]

    def try_consume_all(self, limits: list[tuple[str, int]]) -> tuple[str, int] | None:
        """Count one request in every scope unless one is at its daily limit; return that
        (scope, limit), having counted nothing, or None when all were counted."""
        day = self._today()
        with self._lock:
            for scope, _ in limits:
                if (scope, day) not in self._counts:
                    self._counts[(scope, day)] = self._load((scope, day))
            for scope, limit in limits:
                if self._counts[(scope, day)] >= limit:
                    return scope, limit
            for scope, _ in limits:
                self._counts[(scope, day)] += 1
                self._dirty.add((scope, day))
        return None

    def add(self, scopes: list[str], amount: int) -> None:
        """Count ``amount`` (e.g. tokens) today in every scope, without a limit."""
        day = self._today()
        with self._lock:
            for scope in scopes:
                key = (scope, day)
                if key not in self._counts:
                    self._counts[key] = self._load(key)
                self._counts[key] += amount
                self._dirty.add(key)

    def flush(self) -> None:
        """Write the changed counters; drop days that are over from memory."""
        with self._lock:
            dirty = {key: self._counts[key] for key in self._dirty}
            self._dirty.clear()
            today = utc_day(self._clock())
            for key in [k for k in self._counts if k[1] != today and k not in dirty]:
                del self._counts[key]
        if not dirty:
            return
        with self._db.session() as session:
            existing = {
                (row.scope, row.day): row
                for row in session.scalars(
                    select(UsageCounter).where(
                        UsageCounter.scope.in_({scope for scope, _ in dirty})
                    )
                )
            }
            for (scope, day), requests in dirty.items():
                row = existing.get((scope, day))
                if row is None:
                    session.add(UsageCounter(scope=scope, day=day, requests=requests))
                else:
                    row.requests = max(row.requests, requests)
            session.commit()
