"""FairSlots: slots go to the waiting tenant served the fewest weighted tokens (VTC)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from openmaas.llm.slots import OUTPUT_TOKEN_COST, FairSlots


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=5))


async def _settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_slots_are_given_at_once_up_to_the_limit_then_acquirers_wait() -> None:
    async def scenario() -> None:
        slots = FairSlots(2)
        await slots.acquire("a")
        await slots.acquire("b")
        assert slots.busy == 2
        third = asyncio.create_task(slots.acquire("c"))
        await _settle()
        assert not third.done()
        assert slots.waiting() == 1
        slots.release("a")
        await _settle()
        assert third.done()
        assert slots.busy == 2
        assert slots.waiting() == 0
        slots.release("b")
        slots.release("c")
        assert slots.busy == 0

    _run(scenario)


def test_free_slot_goes_to_the_lowest_counter_not_the_first_waiter() -> None:
    async def scenario() -> None:
        slots = FairSlots(1)
        await slots.acquire("a")
        a_waiters = [asyncio.create_task(slots.acquire("a")) for _ in range(3)]
        await _settle()
        b_waiter = asyncio.create_task(slots.acquire("b"))
        await _settle()
        assert slots.waiting() == 4
        slots.charge("a", input_tokens=100, output_tokens=50)  # the running request's tokens
        assert slots.counter("a") == 100 + OUTPUT_TOKEN_COST * 50
        slots.release("a")
        await _settle()
        assert b_waiter.done()
        assert not any(task.done() for task in a_waiters)
        slots.release("b")  # b served nothing: still lowest, but has no one waiting
        await _settle()
        assert a_waiters[0].done()  # first come, first served within a tenant
        assert not a_waiters[1].done()
        for _ in range(3):
            slots.release("a")
            await _settle()
        assert all(task.done() for task in a_waiters)
        assert slots.busy == 0

    _run(scenario)


def test_a_tenant_back_from_idle_is_lifted_to_the_lowest_counter_in_play() -> None:
    async def scenario() -> None:
        slots = FairSlots(3)
        await slots.acquire("a")
        await slots.acquire("b")
        slots.charge("a", input_tokens=1000)
        slots.charge("b", input_tokens=300)
        await slots.acquire("c")  # new: starts at the lowest counter of those in play
        assert slots.counter("c") == 300
        slots.release("c")
        slots.charge("b", input_tokens=500)  # b: 800, a: 1000; c idle at 300
        await slots.acquire("c")  # idling banked no credit
        assert slots.counter("c") == 800
        slots.charge("c", input_tokens=900)
        slots.release("b")
        await slots.acquire("b")  # 800 -> a's 1000, the lowest of a (1000) and c (1700)
        assert slots.counter("b") == 1000
        for tenant in ("a", "b", "c"):
            slots.release(tenant)
        assert slots.counter("a") == 0  # nobody in play: history dropped

    _run(scenario)


def test_weight_two_makes_the_counter_rise_half_as_fast() -> None:
    async def scenario() -> None:
        slots = FairSlots(2)
        await slots.acquire("light", weight=1.0)
        await slots.acquire("heavy", weight=2.0)
        for tenant in ("light", "heavy"):
            slots.charge(tenant, input_tokens=100, output_tokens=50)
        assert slots.counter("light") == 200
        assert slots.counter("heavy") == 100
        slots.release("light")
        slots.release("heavy")

    _run(scenario)


def test_cancelling_a_waiting_acquire_gives_up_its_place() -> None:
    async def scenario() -> None:
        slots = FairSlots(1)
        await slots.acquire("a")
        waiter = asyncio.create_task(slots.acquire("b"))
        behind = asyncio.create_task(slots.acquire("c"))
        await _settle()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.waiting() == 1
        slots.release("a")
        await _settle()
        assert behind.done()  # the slot went to c, never to the cancelled b
        assert slots.busy == 1
        slots.release("c")
        assert slots.busy == 0
        assert slots.waiting() == 0

    _run(scenario)


def test_cancelling_just_after_the_slot_was_handed_over_gives_it_back() -> None:
    async def scenario() -> None:
        slots = FairSlots(1)
        await slots.acquire("a")
        waiter = asyncio.create_task(slots.acquire("b"))
        await _settle()
        slots.release("a")  # hands the slot to b, whose task has not run yet
        assert slots.busy == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.busy == 0
        await slots.acquire("c")  # the slot is free again
        assert slots.busy == 1
        slots.release("c")

    _run(scenario)


@pytest.mark.parametrize(
    ("weights", "slot_count"),
    [
        ({"a": 1.0, "b": 1.0}, 1),
        ({"a": 1.0, "b": 2.0, "c": 3.0}, 1),
        ({"a": 1.0, "b": 1.0, "c": 1.0}, 2),
        ({"a": 1.0, "b": 2.0, "c": 1.0, "d": 3.0}, 3),
    ],
)
def test_backlogged_tenants_counters_stay_within_the_vtc_bound(
    weights: dict[str, float], slot_count: int
) -> None:
    """VTC's bound: backlogged counters differ by at most twice what one batch (``slots``
    requests) costs; with one slot, twice one request. Unequal weights make the check bite:
    serving them first come, first served would spread the counters without bound."""
    input_tokens, output_tokens = 30, 10
    cost = input_tokens + OUTPUT_TOKEN_COST * output_tokens  # one request, at weight 1
    served = dict.fromkeys(weights, 0)
    spreads: list[float] = []

    async def scenario() -> None:
        slots = FairSlots(slot_count)
        stop = asyncio.Event()

        async def client(tenant: str) -> None:
            while not stop.is_set():
                await slots.acquire(tenant, weights[tenant])
                try:
                    await asyncio.sleep(0)  # decoding
                    slots.charge(tenant, input_tokens, output_tokens)
                    served[tenant] += 1
                    counters = [slots.counter(t) for t in weights]
                    spreads.append(max(counters) - min(counters))
                    if sum(served.values()) >= 400:
                        stop.set()
                finally:
                    slots.release(tenant)

        # Each tenant keeps more requests in flight than there are slots: all backlogged.
        tasks = [
            asyncio.create_task(client(tenant)) for _ in range(slot_count + 2) for tenant in weights
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert slots.busy == 0
        assert slots.waiting() == 0

    _run(scenario)
    assert sum(served.values()) >= 400
    assert max(spreads) <= 2 * cost * slot_count
    # Service follows the weights: requests served per unit of weight are about equal.
    per_weight = [served[t] / weights[t] for t in weights]
    assert max(per_weight) - min(per_weight) <= 3
