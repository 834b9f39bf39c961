"""Server-sent events as the API streams them, in OpenAI's format: one `data: {json}` line per
event, a blank line after each, and `data: [DONE]` last. One reader for every test that reads a
stream, so each holds streams to the same format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

DATA = "data: "
DONE_LINE = DATA + "[DONE]"


class NotAnEventStream(AssertionError):
    """The text is not a complete stream of OpenAI's server-sent events."""


def _lines(stream: bytes | str | Iterable[str]) -> list[str]:
    if isinstance(stream, bytes):
        try:
            stream = stream.decode()
        except UnicodeDecodeError:
            raise NotAnEventStream(f"stream is not UTF-8: {stream[:200]!r}") from None
    if isinstance(stream, str):
        stream = stream.split("\n")  # the service ends lines with \n, as aiter_lines splits
    return [line for line in stream if line]  # blank lines separate events


def payloads(stream: bytes | str | Iterable[str]) -> list[str]:
    """The data of each event, as sent, of a whole stream (a body, or its lines); it must be data
    lines only, ending with `data: [DONE]`, which is not returned."""
    lines = _lines(stream)
    if not lines or lines[-1] != DONE_LINE:
        raise NotAnEventStream(f"stream does not end with {DONE_LINE!r}: {lines[-3:]!r}")
    return [data_of(line) for line in lines[:-1]]


def data_of(line: str) -> str:
    """What one `data: ...` line carries."""
    if not line.startswith(DATA):
        raise NotAnEventStream(f"not an SSE data line: {line[:200]!r}")
    return line.removeprefix(DATA)


def event_of(data: str) -> dict[str, Any]:
    """The JSON object an event's data holds."""
    try:
        event = json.loads(data)
    except ValueError:
        raise NotAnEventStream(f"event is not JSON: {data[:200]!r}") from None
    if not isinstance(event, dict):
        raise NotAnEventStream(f"event is not a JSON object: {data[:200]!r}")
    return event


def parse_event(line: str) -> dict[str, Any]:
    """The event one `data: {json}` line sends."""
    return event_of(data_of(line))


def parse_events(stream: bytes | str | Iterable[str]) -> list[dict[str, Any]]:
    """Every event of a whole stream (a body, or its lines), in order, `[DONE]` checked and left
    out."""
    return [event_of(data) for data in payloads(stream)]
