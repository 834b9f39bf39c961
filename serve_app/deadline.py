"""Request deadlines: a configured default that a client may shorten with a header."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

from serve_app.errors import DeadlineExceeded, InvalidRequest

T = TypeVar("T")

TIMEOUT_HEADER = "x-request-timeout"


def timeout_from_header(value: str | None, default_s: float, max_s: float) -> float:
    """Seconds this request may take: the header's value (bounded by `max_s`) or the default."""
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
    return min(seconds, max_s)


async def within(timeout_s: float, call: Awaitable[T]) -> T:
    """Await `call`, cancelling it (and the model work behind it) when the deadline passes."""
    try:
        return await asyncio.wait_for(call, timeout_s)
    except TimeoutError:
        raise DeadlineExceeded(
            f"The request did not finish within its deadline of {timeout_s:g} s."
        ) from None
