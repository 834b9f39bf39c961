"""Request deadlines: one per request, from its arrival to its last byte.

The gateway starts it when the request arrives; reading the body, the model call and, for a
stream, every later chunk must fit in what is left of it. A client may shorten it with a header,
never lengthen it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from serve_app.errors import APIError, DeadlineExceeded, InvalidRequest, RequestTimeout

T = TypeVar("T")

TIMEOUT_HEADER = "x-request-timeout"


def timeout_from_header(value: str | None, default_s: float) -> float:
    """Seconds this request may take: the header's value if shorter than the default."""
    if value is None:
        return default_s
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequest(
            f"'{TIMEOUT_HEADER}' must be a positive number of seconds, not '{value[:32]}'.",
            param=TIMEOUT_HEADER,
        )
    return min(seconds, default_s)


@dataclass(frozen=True)
class Deadline:
    """`timeout_s` from `started_s` (time.monotonic, the clock asyncio's loop runs on)."""

    timeout_s: float
    started_s: float

    @classmethod
    def starting_now(cls, timeout_s: float) -> Deadline:
        return cls(timeout_s, time.monotonic())

    def remaining_s(self) -> float:
        return self.started_s + self.timeout_s - time.monotonic()

    async def run(self, call: Awaitable[T]) -> T:
        """Await `call`, cancelling it (and the model work behind it) when the deadline passes:
        504 deadline_exceeded (an error event, for a stream that has started)."""
        return await self._within(
            call,
            DeadlineExceeded(
                f"The request did not finish within its deadline of {self.timeout_s:g} s."
            ),
        )

    async def read_body(self, call: Awaitable[T]) -> T:
        """Await the request body; a client still sending at the deadline gets 408."""
        return await self._within(
            call,
            RequestTimeout(
                f"The request body did not arrive within the deadline of {self.timeout_s:g} s.",
                headers={"Connection": "close"},
            ),
        )

    async def _within(self, call: Awaitable[T], error: APIError) -> T:
        try:
            async with asyncio.timeout(max(0.0, self.remaining_s())):
                return await call
        except TimeoutError:
            raise error from None
