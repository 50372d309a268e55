"""Token quotas per API key: a per-minute bucket and a per-day count in the usage meter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openmaas.errors import TokenQuotaExceededError
from openmaas.quotas.tokens import TokenBudget, token_scopes
from openmaas.quotas.usage import UsageMeter
from openmaas.store.db import Database


class Clock:
    """A monotonic clock the test advances."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Day:
    """A wall clock for the usage meter, 10 minutes before a UTC midnight."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'tokens.db'}")
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def day() -> Day:
    return Day()


@pytest.fixture
def meter(db: Database, day: Day) -> UsageMeter:
    return UsageMeter(db, clock=day)


def test_token_scopes_are_key_tenant_and_model() -> None:
    assert token_scopes("k1", 7, "m") == ["tokens:key:k1", "tokens:tenant:7", "tokens:model:m"]


def test_minute_bucket_admits_until_overdrawn_then_refills(meter: UsageMeter) -> None:
    clock = Clock()
    budget = TokenBudget(meter, per_minute=120, per_day=None, clock=clock)  # 2 tokens/s
    scopes = token_scopes("k1", 1, "m")
    budget.check("k1")
    budget.consume(scopes, "k1", 100)
    budget.check("k1")  # 20 left
    budget.consume(scopes, "k1", 60)  # one request may overdraw: -40
    with pytest.raises(TokenQuotaExceededError) as caught:
        budget.check("k1")
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(20, abs=0.01)  # 40 tokens at 2/s
    assert "120 tokens per minute" in str(caught.value.detail)
    clock.now += 19
    with pytest.raises(TokenQuotaExceededError) as again:
        budget.check("k1")
    assert again.value.retry_after >= 1  # never less than a second, even when nearly full
    clock.now += 1.5
    budget.check("k1")


def test_minute_bucket_refills_only_up_to_the_quota(meter: UsageMeter) -> None:
    clock = Clock()
    budget = TokenBudget(meter, per_minute=60, per_day=None, clock=clock)
    scopes = token_scopes("k1", 1, "m")
    clock.now += 3600  # an idle hour banks no more than one minute's tokens
    budget.consume(scopes, "k1", 60)
    with pytest.raises(TokenQuotaExceededError):
        budget.check("k1")


def test_keys_have_their_own_buckets(meter: UsageMeter) -> None:
    budget = TokenBudget(meter, per_minute=50, per_day=None, clock=Clock())
    budget.consume(token_scopes("k1", 1, "m"), "k1", 500)
    with pytest.raises(TokenQuotaExceededError):
        budget.check("k1")
    budget.check("k2")  # same tenant and model, another key


def test_day_quota_counts_in_the_meter_and_resets_at_midnight(
    db: Database, day: Day, meter: UsageMeter
) -> None:
    budget = TokenBudget(meter, per_minute=None, per_day=1000, clock=Clock())
    scopes = token_scopes("k1", 7, "m")
    budget.consume(scopes, "k1", 999)
    budget.check("k1")
    budget.consume(scopes, "k1", 1)
    with pytest.raises(TokenQuotaExceededError) as caught:
        budget.check("k1")
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(600)  # until 00:00 UTC
    assert "1000 tokens for today" in str(caught.value.detail)
    assert meter.count("tokens:key:k1") == 1000
    assert meter.count("tokens:tenant:7") == 1000
    assert meter.count("tokens:model:m") == 1000
    budget.check("k2")  # the day quota is per key

    meter.flush()  # the count survives a restart
    restarted = TokenBudget(UsageMeter(db, clock=day), per_minute=None, per_day=1000)
    with pytest.raises(TokenQuotaExceededError):
        restarted.check("k1")

    day.now += timedelta(minutes=11)
    budget.check("k1")
    assert meter.count("tokens:key:k1") == 0


def test_nothing_consumed_counts_nothing(meter: UsageMeter) -> None:
    budget = TokenBudget(meter, per_minute=10, per_day=10, clock=Clock())
    budget.consume(token_scopes("k1", 1, "m"), "k1", 0)
    budget.consume(token_scopes("k1", 1, "m"), "k1", -5)
    budget.check("k1")
    assert meter.count("tokens:key:k1") == 0


def test_no_limits_never_raise(meter: UsageMeter) -> None:
    budget = TokenBudget(meter, per_minute=None, per_day=None, clock=Clock())
    budget.consume(token_scopes("k1", 1, "m"), "k1", 10**9)
    budget.check("k1")
    assert meter.count("tokens:key:k1") == 10**9  # still counted, for usage reports
