"""FairQueue: fairness between backlogged tenants, weights, priorities and the bound."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmaas.serving.scheduler import BATCH, INTERACTIVE, FairQueue, QueueFullError, WorkItem


def _serve(queue: FairQueue, count: int) -> dict[str, float]:
    """Pop ``count`` items; the work each tenant got."""
    served: dict[str, float] = {}
    for _ in range(count):
        item = queue.pop()
        assert item is not None
        served[item.tenant] = served.get(item.tenant, 0.0) + item.cost
    return served


@given(
    tenants=st.integers(min_value=2, max_value=10),
    cost=st.floats(min_value=0.5, max_value=8.0),
    pops=st.integers(min_value=1, max_value=400),
)
@settings(max_examples=60, deadline=None)
def test_backlogged_tenants_stay_within_one_request_of_each_other(
    tenants: int, cost: float, pops: int
) -> None:
    queue = FairQueue(capacity=100_000)
    for round_ in range(200):
        for t in range(tenants):
            queue.offer(WorkItem(f"t{t}", cost=cost, deadline=float(round_)))
    served = _serve(queue, min(pops, 200 * tenants))
    totals = [served.get(f"t{t}", 0.0) for t in range(tenants)]
    assert max(totals) - min(totals) <= 2 * cost


def test_mixed_costs_stay_within_twice_the_largest_request() -> None:
    rng = random.Random(7)
    queue = FairQueue(capacity=100_000)
    for _ in range(300):
        for tenant in ("a", "b", "c"):
            queue.offer(WorkItem(tenant, cost=rng.choice([1.0, 2.0, 4.0])))
    served = {"a": 0.0, "b": 0.0, "c": 0.0}
    for _ in range(600):
        item = queue.pop()
        assert item is not None
        served[item.tenant] += item.cost
        backlogged = [t for t in served if queue.queued(t)]
        if len(backlogged) == 3:
            assert max(served.values()) - min(served.values()) <= 2 * 4.0


def test_weights_share_service_in_proportion() -> None:
    queue = FairQueue(capacity=100_000)
    for _ in range(1000):
        queue.offer(WorkItem("heavy", weight=3.0))
        queue.offer(WorkItem("light", weight=1.0))
    served = _serve(queue, 800)
    assert served["heavy"] / served["light"] == pytest.approx(3.0, rel=0.02)


def test_a_newcomer_is_served_next_not_after_the_backlog() -> None:
    queue = FairQueue(capacity=1000)
    for _ in range(100):
        queue.offer(WorkItem("flood"))
    _serve(queue, 50)  # the flood has been served 50 already
    queue.offer(WorkItem("quiet"))
    first = queue.pop()
    second = queue.pop()
    assert "quiet" in {first.tenant if first else None, second.tenant if second else None}


def test_idle_time_earns_no_credit() -> None:
    queue = FairQueue(capacity=1000)
    for _ in range(20):
        queue.offer(WorkItem("a"))
    _serve(queue, 10)  # b was idle while a was served
    for _ in range(20):
        queue.offer(WorkItem("b"))
    served = _serve(queue, 20)
    assert abs(served.get("a", 0) - served.get("b", 0)) <= 1  # b does not get 10 back first


def test_interactive_goes_before_batch() -> None:
    queue = FairQueue(capacity=100)
    queue.offer(WorkItem("a", priority=BATCH))
    queue.offer(WorkItem("b", priority=BATCH))
    queue.offer(WorkItem("c", priority=INTERACTIVE))
    item = queue.pop()
    assert item is not None
    assert item.tenant == "c"


def test_a_tenant_over_its_share_is_refused_and_others_still_get_in() -> None:
    queue = FairQueue(capacity=10)
    for _ in range(10):
        queue.offer(WorkItem("flood"))
    with pytest.raises(QueueFullError) as refused:
        queue.offer(WorkItem("flood"))
    assert refused.value.reason == "over_share"
    displaced = queue.offer(WorkItem("quiet"))  # full, but quiet is within its share
    assert displaced is not None
    assert displaced.tenant == "flood"
    assert len(queue) == 10
    assert queue.queued("quiet") == 1


def test_a_full_queue_displaces_the_tenant_most_over_its_share() -> None:
    queue = FairQueue(capacity=6)
    for tenant in ("a", "a", "a", "a", "b", "b"):
        queue.offer(WorkItem(tenant))
    displaced = queue.offer(WorkItem("c"))  # shares of 3 tenants: 2 each; a holds 4
    assert displaced is not None
    assert displaced.tenant == "a"
    assert (queue.queued("a"), queue.queued("b"), queue.queued("c"), len(queue)) == (3, 2, 1, 6)


def test_dropped_items_are_skipped_and_accept_can_stop_a_batch() -> None:
    queue = FairQueue(capacity=10)
    gone = WorkItem("a")
    queue.offer(gone)
    queue.offer(WorkItem("a", cost=2.0))
    queue.offer(WorkItem("a", cost=5.0))
    gone.dropped = True
    first = queue.pop()
    assert first is not None
    assert first.cost == 2.0
    assert queue.pop(lambda item: item.cost < 3) is None  # refused: stays queued
    assert len(queue) == 1
    rest = queue.drain()
    assert [item.cost for item in rest] == [5.0]
    assert len(queue) == 0
    assert queue.pop() is None
