"""Token buckets, daily usage counters and admission, with controlled clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openmaas.errors import QuotaExceededError, RateLimitedError
from openmaas.quotas import Admission, RateLimiter, TokenBucket, UsageMeter
from openmaas.quotas.usage import seconds_until_tomorrow, utc_day
from openmaas.security import Principal
from openmaas.store.db import Database


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'q.db'}")
    database.migrate()
    return database


def _principal(key_id: str = "k1", tenant_id: int = 1) -> Principal:
    return Principal(tenant_id, "t", False, key_id, "consumer", frozenset({"infer"}))


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, capacity=4.0, clock=clock)
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0
    clock.now += 100
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 0]  # capped at capacity


def test_limiter_keeps_one_bucket_per_name() -> None:
    limiter = RateLimiter(rate=1.0, burst_seconds=1.0, clock=Clock())
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0


def test_meter_counts_per_day_and_survives_a_restart(db: Database) -> None:
    day = datetime(2026, 1, 1, 23, 59, tzinfo=UTC)
    meter = UsageMeter(db, clock=lambda: day)
    assert all(meter.try_consume("grant:1", 3) for _ in range(3))
    assert not meter.try_consume("grant:1", 3)
    meter.flush()
    again = UsageMeter(db, clock=lambda: day)
    assert again.count("grant:1") == 3
    assert not again.try_consume("grant:1", 3)
    tomorrow = UsageMeter(db, clock=lambda: day + timedelta(minutes=2))
    assert tomorrow.try_consume("grant:1", 3)
    assert utc_day(day) == "2026-01-01"
    assert seconds_until_tomorrow(day) == 60


def test_admission_raises_with_retry_after(db: Database) -> None:
    clock = Clock()
    meter = UsageMeter(db)
    admission = Admission(RateLimiter(1, 1, clock), RateLimiter(100, 1, clock), meter)
    admission.check_rate(_principal())
    with pytest.raises(RateLimitedError) as limited:
        admission.check_rate(_principal())
    assert limited.value.retry_after == pytest.approx(1.0)
    admission.charge_grant(7, 1, "a/m")
    with pytest.raises(QuotaExceededError) as exhausted:
        admission.charge_grant(7, 1, "a/m")
    assert 0 < exhausted.value.retry_after <= 86400
    admission.charge_grant(None, None, "own/model")  # no grant: nothing to charge


def test_tenant_limit_spans_its_keys(db: Database) -> None:
    clock = Clock()
    admission = Admission(RateLimiter(100, 1, clock), RateLimiter(1, 2, clock), UsageMeter(db))
    admission.check_rate(_principal("k1"))
    admission.check_rate(_principal("k2"))
    with pytest.raises(RateLimitedError, match="tenant"):
        admission.check_rate(_principal("k3"))
