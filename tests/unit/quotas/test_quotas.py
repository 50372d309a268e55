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
    assert all(meter.try_consume_all([("grant:1", 3)]) is None for _ in range(3))
    assert meter.try_consume_all([("grant:1", 3)]) == ("grant:1", 3)
    meter.flush()
    again = UsageMeter(db, clock=lambda: day)
    assert again.count("grant:1") == 3
    assert again.try_consume_all([("grant:1", 3)]) == ("grant:1", 3)
    tomorrow = UsageMeter(db, clock=lambda: day + timedelta(minutes=2))
    assert tomorrow.try_consume_all([("grant:1", 3)]) is None
    assert utc_day(day) == "2026-01-01"
    assert seconds_until_tomorrow(day) == 60


def test_meter_counts_all_scopes_or_none(db: Database) -> None:
    meter = UsageMeter(db)
    assert meter.try_consume_all([("key:a", 5), ("tenant:1", 1)]) is None
    assert meter.try_consume_all([("key:a", 5), ("tenant:1", 1)]) == ("tenant:1", 1)
    assert meter.count("key:a") == 1  # the refused call counted nowhere


def test_admission_raises_with_retry_after(db: Database) -> None:
    clock = Clock()
    meter = UsageMeter(db)
    admission = Admission(RateLimiter(1, 1, clock), RateLimiter(100, 1, clock), meter)
    admission.admit(_principal())
    with pytest.raises(RateLimitedError) as limited:
        admission.admit(_principal())
    assert limited.value.retry_after == pytest.approx(1.0)
    admission.admit(_principal("k2"), grant_id=7, grant_quota_per_day=1, model="a/m")
    with pytest.raises(QuotaExceededError, match="share of 'a/m'") as exhausted:
        admission.admit(_principal("k3"), grant_id=7, grant_quota_per_day=1, model="a/m")
    assert 0 < exhausted.value.retry_after <= 86400


def test_a_call_refused_by_the_grant_quota_costs_the_key_nothing(db: Database) -> None:
    meter = UsageMeter(db)
    limiter = RateLimiter(1000, 1, Clock())
    admission = Admission(limiter, limiter, meter, key_daily_quota=10)
    admission.admit(_principal(), grant_id=1, grant_quota_per_day=1, model="a/m")
    with pytest.raises(QuotaExceededError):
        admission.admit(_principal(), grant_id=1, grant_quota_per_day=1, model="a/m")
    assert meter.count("key:k1") == 1


def test_tenant_limit_spans_its_keys(db: Database) -> None:
    clock = Clock()
    admission = Admission(RateLimiter(100, 1, clock), RateLimiter(1, 2, clock), UsageMeter(db))
    admission.admit(_principal("k1"))
    admission.admit(_principal("k2"))
    with pytest.raises(RateLimitedError, match="tenant"):
        admission.admit(_principal("k3"))
