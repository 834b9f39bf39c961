"""Weighted fair queuing of one model's waiting requests between tenants (no clock, no asyncio).

Start-time fair queuing: a request of cost `c` from a tenant of weight `w` gets a start tag
`max(virtual time, the tenant's last finish tag)` and a finish tag `start + c / w`; waiting
requests leave in order of (priority class, finish tag, arrival). The virtual time is the start
tag of the last request sent, so a tenant that was idle starts at "now" and banks no credit, and
a tenant below its share always has a smaller finish tag than the queued requests of a tenant
above it: it is never queued behind them. Over time each busy tenant gets capacity in
proportion to its weight.

The queue is bounded: when it is full, the request with the largest tag (arriving or waiting)
is the one refused, so a full queue refuses the tenant furthest over its share.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Share:
    """A tenant's weight, and its priority class (0 is served first; lower classes wait)."""

    weight: float
    rank: int = 1


@dataclass(order=True)
class Ticket(Generic[T]):
    """One waiting request; ordered by when it should leave."""

    rank: int
    finish: float
    seq: int
    start: float = field(compare=False)
    tenant: str = field(compare=False)
    item: T = field(compare=False)


class QueueFull(Exception):
    """The arriving request is the one furthest over its tenant's share of a full queue."""


class FairQueue(Generic[T]):
    """Waiting requests of one model, at most `max_waiting`. Use from one thread or loop."""

    def __init__(self, max_waiting: int) -> None:
        self._max_waiting = max_waiting
        self._waiting: list[Ticket[T]] = []  # sorted: the next to leave first
        self._virtual_time = 0.0
        self._last_finish: dict[str, float] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._waiting)

    def push(
        self, tenant: str, share: Share, cost: float, item: T
    ) -> tuple[Ticket[T], Ticket[T] | None]:
        """Queue `item`; returns its ticket and the ticket pushed out to make room (None if
        none was). Raises QueueFull when the queue is full and `item` would leave last."""
        start, finish = self._tags(tenant, share, cost)
        ticket = Ticket(share.rank, finish, next(self._seq), start, tenant, item)
        evicted: Ticket[T] | None = None
        if len(self._waiting) >= self._max_waiting:
            if not self._waiting or ticket > self._waiting[-1]:
                raise QueueFull(f"{len(self._waiting)} requests wait with smaller tags")
            evicted = self._waiting.pop()
            self._forget(evicted)
        self._last_finish[tenant] = ticket.finish
        bisect.insort(self._waiting, ticket)
        return ticket, evicted

    def send_now(self, tenant: str, share: Share, cost: float) -> None:
        """Count a request that leaves without waiting (the queue was empty) like one that
        waited, so a tenant's requests in flight count against its share too."""
        start, finish = self._tags(tenant, share, cost)
        self._last_finish[tenant] = finish
        self._virtual_time = max(self._virtual_time, start)

    def _tags(self, tenant: str, share: Share, cost: float) -> tuple[float, float]:
        start = max(self._virtual_time, self._last_finish.get(tenant, 0.0))
        return start, start + max(cost, 1e-9) / share.weight

    def pop(self) -> T | None:
        """The next item to send (None when none waits); the virtual time moves to its start."""
        if not self._waiting:
            return None
        ticket = self._waiting.pop(0)
        self._virtual_time = max(self._virtual_time, ticket.start)
        return ticket.item

    def remove(self, ticket: Ticket[T]) -> bool:
        """Take a waiting request out (its client went away); False if it already left."""
        index = bisect.bisect_left(self._waiting, ticket)
        if index < len(self._waiting) and self._waiting[index] is ticket:
            del self._waiting[index]
            self._forget(ticket)
            return True
        return False

    def _forget(self, ticket: Ticket[T]) -> None:
        """A request that never runs gives its tenant back its place, if it was the latest."""
        if self._last_finish.get(ticket.tenant) == ticket.finish:
            self._last_finish[ticket.tenant] = ticket.start
