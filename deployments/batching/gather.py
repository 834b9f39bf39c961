"""Gather-then-slice: callers that wait together share one call, each answered with its own slice.

The ingress's coalescer (many small embedding requests, one handle call) and the replica's pass
merger (many `@serve.batch` batches, one forward pass) are the same loop: callers queue in
arrival order, whoever sends next takes whole callers from the head up to a size limit, skips
the ones already gone, makes one call with everyone's items in order, and hands each caller its
part of the answer, or the call's error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

In = TypeVar("In")
Answer = TypeVar("Answer")
Result = TypeVar("Result")


@dataclass
class Waiting(Generic[In, Answer]):
    items: Sequence[In]
    answer: asyncio.Future[Answer]
    since: float  # event-loop time it arrived


class GatherQueue(Generic[In, Answer]):
    """Callers waiting for a shared call, oldest first. Use from one event loop."""

    def __init__(self) -> None:
        self._waiting: deque[Waiting[In, Answer]] = deque()
        self.items = 0  # items of all waiting callers

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def put(self, items: Sequence[In]) -> asyncio.Future[Answer]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append(Waiting(items, answer, loop.time()))
        self.items += len(items)
        return answer

    def oldest_since(self) -> float | None:
        """When the longest-waiting caller arrived (event-loop time), None if none waits."""
        return self._waiting[0].since if self._waiting else None

    def take(self, max_items: int) -> list[Waiting[In, Answer]]:
        """Whole callers from the head, up to `max_items` items (always at least one caller);
        callers already gone (cancelled) are dropped, their items never sent."""
        group: list[Waiting[In, Answer]] = []
        size = 0
        while self._waiting:
            head = self._waiting[0]
            if group and size + len(head.items) > max_items:
                break
            self._waiting.popleft()
            self.items -= len(head.items)
            if not head.answer.done():
                group.append(head)
                size += len(head.items)
        return group


async def call_gathered(
    group: Sequence[Waiting[In, Answer]],
    call: Callable[[list[In]], Awaitable[Result]],
    part: Callable[[Result, int, int], Answer],
) -> None:
    """One `call` with the group's items in order; each caller gets `part(result, start, stop)`
    for its own items, or the call's exception. Cancelled (the service stops): every caller is
    cancelled too."""
    try:
        result = await call([item for caller in group for item in caller.items])
    except asyncio.CancelledError:
        for caller in group:
            caller.answer.cancel()
        raise
    except Exception as exc:  # noqa: BLE001 - every caller of the call gets the error
        for caller in group:
            if not caller.answer.done():
                caller.answer.set_exception(exc)
        return
    start = 0
    for caller in group:
        stop = start + len(caller.items)
        if not caller.answer.done():
            caller.answer.set_result(part(result, start, stop))
        start = stop
