"""Fair, bounded, prioritised queue of one model's work (pure logic: no I/O, no clock).

Tenants are served by virtual-token counters (VTC, Sheng et al. 2024): each tenant's counter
is the work it has been served divided by its weight; the next item comes from the backlogged
tenant with the lowest counter, in the highest priority class that has work. A tenant that
becomes backlogged again is lifted to the lowest counter of the others, so idling earns no
credit. Between backlogged tenants of equal weight the served work differs by at most one
item's cost.

The queue is bounded. A tenant may hold its weighted share of the slots; an arrival over its
share is refused (429), and an arrival within its share into a full queue displaces the
newest item of the tenant most over its share, who gets the 429 instead.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["INTERACTIVE", "PRIORITIES", "FairQueue", "QueueFullError", "WorkItem"]

INTERACTIVE = 0
BATCH = 1
PRIORITIES = {"interactive": INTERACTIVE, "batch": BATCH}


@dataclass(eq=False)
class WorkItem:
    """One request waiting for a replica."""

    tenant: str
    cost: float = 1.0
    weight: float = 1.0
    priority: int = INTERACTIVE
    deadline: float = math.inf
    payload: Any = None
    dropped: bool = False  # the caller gave up (disconnect, deadline): skip it


@dataclass(frozen=True)
class QueueFullError(Exception):
    """Why an item was refused or displaced: ``over_share`` (429) or ``full`` (503)."""

    reason: str
    item: WorkItem


@dataclass
class _Tenant:
    counter: float = 0.0
    weight: float = 1.0
    queues: tuple[deque[WorkItem], ...] = field(default_factory=lambda: (deque(), deque()))

    def queued(self) -> int:
        return sum(len(q) for q in self.queues)


class FairQueue:
    """Per-model queue: strict priority classes, VTC fairness between tenants, bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._tenants: dict[str, _Tenant] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def queued(self, tenant: str) -> int:
        """Items of ``tenant`` waiting now."""
        state = self._tenants.get(tenant)
        return state.queued() if state else 0

    def served(self, tenant: str) -> float:
        """The tenant's virtual counter: weighted work served (for tests and metrics)."""
        state = self._tenants.get(tenant)
        return state.counter if state else 0.0

    def share(self, tenant: str, weight: float) -> int:
        """Slots ``tenant`` may hold: its weight's part of the capacity among active tenants."""
        active = sum(s.weight for t, s in self._tenants.items() if t != tenant and s.queued())
        return max(1, math.floor(self.capacity * weight / (active + weight)))

    def offer(self, item: WorkItem) -> WorkItem | None:
        """Queue ``item``; return an item displaced to make room (the caller refuses it).

        Raises QueueFullError("over_share") when the tenant already holds its share, and
        QueueFullError("full") when the queue is full of in-share work.
        """
        state = self._tenants.get(item.tenant)
        if state is None:
            state = self._tenants[item.tenant] = _Tenant(weight=item.weight)
        state.weight = item.weight
        if state.queued() >= self.share(item.tenant, item.weight):
            raise QueueFullError("over_share", item)
        displaced = None
        if self._size >= self.capacity:
            displaced = self._displace(item)
            if displaced is None:
                raise QueueFullError("full", item)
        if not state.queued():
            others = [
                s.counter for t, s in self._tenants.items() if t != item.tenant and s.queued()
            ]
            if others:
                state.counter = max(state.counter, min(others))
        state.queues[item.priority].append(item)
        self._size += 1
        return displaced

    def _displace(self, arriving: WorkItem) -> WorkItem | None:
        """Remove the newest item of the tenant most over its share, if any is over."""
        active = arriving.weight + sum(
            s.weight for t, s in self._tenants.items() if t != arriving.tenant and s.queued()
        )
        worst, worst_excess = None, 0.0
        for name, state in self._tenants.items():
            if name == arriving.tenant or not state.queued():
                continue
            excess = state.queued() - self.capacity * state.weight / active
            if excess > worst_excess:
                worst, worst_excess = state, excess
        if worst is None:
            return None
        queue = worst.queues[BATCH] if worst.queues[BATCH] else worst.queues[INTERACTIVE]
        self._size -= 1
        return queue.pop()

    def pop(self, accept: Callable[[WorkItem], bool] | None = None) -> WorkItem | None:
        """Take the next item in fair order; with ``accept``, only if it accepts it.

        Dropped items are discarded on the way. The tenant is charged the item's cost.
        """
        while self._size:
            chosen = self._next()
            if chosen is None:
                return None
            state, queue = chosen
            item = queue[0]
            if item.dropped:
                queue.popleft()
                self._size -= 1
                if not self._size:
                    self._tenants.clear()
                continue
            if accept is not None and not accept(item):
                return None
            queue.popleft()
            self._size -= 1
            state.counter += item.cost / state.weight
            if not self._size:
                self._tenants.clear()  # all idle: history no longer matters
            return item
        return None

    def _next(self) -> tuple[_Tenant, deque[WorkItem]] | None:
        for priority in (INTERACTIVE, BATCH):
            best: _Tenant | None = None
            for state in self._tenants.values():
                if state.queues[priority] and (
                    best is None or (state.counter, state.queued()) < (best.counter, best.queued())
                ):
                    best = state
            if best is not None:
                return best, best.queues[priority]
        return None

    def drain(self) -> list[WorkItem]:
        """Remove and return every queued item (shutdown, model eviction)."""
        items = [item for s in self._tenants.values() for q in s.queues for item in q]
        for state in self._tenants.values():
            for queue in state.queues:
                queue.clear()
        self._size = 0
        self._tenants.clear()
        return items
