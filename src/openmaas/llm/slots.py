"""A language model's parallel slots, given out fairly across tenants by tokens served.

llama.cpp decodes up to ``slots`` requests together. When more requests wait than there are
slots, the next free slot goes to the waiting tenant with the lowest virtual-token counter
(VTC, Sheng et al. 2024): the tokens it was served, input plus twice output, divided by its
weight. A tenant that starts waiting after a pause is lifted to the lowest counter of the
tenants already in play, so idling earns no credit. First come, first served only within a
tenant.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

__all__ = ["OUTPUT_TOKEN_COST", "FairSlots"]

OUTPUT_TOKEN_COST = 2.0  # an output token costs a decode step; input tokens batch cheaply


@dataclass
class _Tenant:
    counter: float = 0.0
    weight: float = 1.0
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class FairSlots:
    """Slots of one model: ``acquire`` waits for one, ``release`` gives it back."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._busy = 0
        self._tenants: dict[str, _Tenant] = {}

    @property
    def busy(self) -> int:
        return self._busy

    def waiting(self) -> int:
        return sum(len(t.waiting) for t in self._tenants.values())

    def counter(self, tenant: str) -> float:
        """Weighted tokens served to ``tenant`` (for tests and metrics)."""
        state = self._tenants.get(tenant)
        return state.counter if state else 0.0

    async def acquire(self, tenant: str, weight: float = 1.0) -> None:
        """Wait for a slot in fair order; cancelling the wait gives up the place."""
        state = self._enter(tenant, weight)
        if self._busy < self.slots and not self.waiting():
            self._busy += 1
            state.running += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiting.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(tenant)  # the slot came just as the caller left
            elif future in state.waiting:
                state.waiting.remove(future)
            self._forget_if_idle(tenant)
            raise

    def charge(self, tenant: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
        """Count tokens served to ``tenant`` (as they are produced, or at the end)."""
        state = self._tenants.get(tenant)
        if state is not None:
            state.counter += (input_tokens + OUTPUT_TOKEN_COST * output_tokens) / state.weight

    def release(self, tenant: str) -> None:
        """Give a slot back; the next one goes to the waiting tenant with the lowest counter."""
        state = self._tenants.get(tenant)
        if state is not None and state.running:
            state.running -= 1
        self._busy = max(0, self._busy - 1)
        self._hand_over()
        self._forget_if_idle(tenant)

    def _enter(self, tenant: str, weight: float) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(weight=weight)
        state.weight = weight
        if not state.running and not state.waiting:
            active = [t.counter for t in self._tenants.values() if t.running or t.waiting]
            if active:
                state.counter = max(state.counter, min(active))
        return state

    def _hand_over(self) -> None:
        while self._busy < self.slots:
            ready = [t for t in self._tenants.values() if t.waiting]
            if not ready:
                return
            state = min(ready, key=lambda t: t.counter)
            future = state.waiting.popleft()
            if future.cancelled():
                continue
            self._busy += 1
            state.running += 1
            future.set_result(None)

    def _forget_if_idle(self, tenant: str) -> None:
        # Counters matter only between tenants in play; when nobody is, history is dropped.
        if all(not t.running and not t.waiting for t in self._tenants.values()):
            self._tenants.clear()
