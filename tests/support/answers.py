"""What a right answer looks like: for load tests that must count more than status codes, and
for the fuzz, what every answer to any request must be."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tests.support.sse import NotAnEventStream, event_of, payloads

if TYPE_CHECKING:
    from tests.support.fuzz_requests import HostileRequest

MINILM_DIMENSIONS = 384


def valid_embeddings(dimensions: int = MINILM_DIMENSIONS) -> Callable[[bytes], bool]:
    """A check of an /v1/embeddings body: every vector has `dimensions` finite floats and unit
    length (the models normalise), in input order."""

    def check(payload: bytes) -> bool:
        try:
            data = orjson.loads(payload)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        if not data or [item.get("index") for item in data] != list(range(len(data))):
            return False
        for item in data:
            vector = item.get("embedding")
            if not isinstance(vector, list) or len(vector) != dimensions:
                return False
            if not all(isinstance(x, float) and math.isfinite(x) for x in vector):
                return False
            if abs(math.sqrt(sum(x * x for x in vector)) - 1.0) > 1e-3:
                return False
        return True

    return check


def valid_classifications(labels: set[str]) -> Callable[[bytes], bool]:
    """A check of a /v1/classify body: a known label and scores that sum to about 1."""

    def check(payload: bytes) -> bool:
        try:
            data = orjson.loads(payload)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        for item in data:
            scores = item.get("scores") or {}
            if item.get("label") not in labels or set(scores) != labels:
                return False
            if abs(sum(scores.values()) - 1.0) > 1e-3 and len(labels) > 1:
                return False
        return bool(data)

    return check


# ---------------------------------------------------------------------------------------------
# What every answer must be (the fuzz of tests/support/fuzz_requests.py)


class BadAnswer(AssertionError):
    pass


def check_error_body(body: bytes) -> dict[str, Any]:
    """An OpenAI-shaped error: `{"error": {"message", "type", "param", "code"}}`."""
    try:
        document = json.loads(body)
    except ValueError:
        raise BadAnswer(f"error body is not JSON: {body[:200]!r}") from None
    if not isinstance(document, dict) or set(document) != {"error"}:
        raise BadAnswer(f"error body is not {{'error': ...}}: {body[:200]!r}")
    error = document["error"]
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        raise BadAnswer(f"error object has the wrong keys: {body[:200]!r}")
    if not isinstance(error["message"], str) or not error["message"]:
        raise BadAnswer(f"error message missing: {body[:200]!r}")
    if not isinstance(error["type"], str):
        raise BadAnswer(f"error type missing: {body[:200]!r}")
    for key in ("param", "code"):
        if error[key] is not None and not isinstance(error[key], str):
            raise BadAnswer(f"error {key} is not a string: {body[:200]!r}")
    if b"Traceback" in body or b'File "' in body:
        raise BadAnswer(f"a traceback reached the client: {body[:300]!r}")
    return error


def check_event_stream(body: bytes) -> None:
    """OpenAI's SSE: `data: {json}` events ending with `data: [DONE]`; errors OpenAI-shaped."""
    try:
        for data in payloads(body):
            if "error" in event_of(data):
                check_error_body(data.encode())  # as sent: a traceback shows in the raw text
    except NotAnEventStream as exc:
        raise BadAnswer(str(exc)) from None


def check_answer(
    request: HostileRequest,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    seconds: float,
    max_seconds: float,
    ours: bool = True,
) -> None:
    """Raise BadAnswer unless the answer is one a trusted server may give to `request`.

    `ours`: the application answered (not a proxy in front of it, for a path outside the
    application's route prefix); only then must errors be OpenAI-shaped."""
    where = f"\n  request: {request.describe()}\n  answer: {status} {body[:300]!r}"
    if seconds > max_seconds:
        raise BadAnswer(f"answered after {seconds:.1f} s (limit {max_seconds} s){where}")
    deadline_honoured = status == 504 and request.short_deadline
    if status >= 500 and not deadline_honoured:
        raise BadAnswer(f"server error {status}{where}")
    if request.method == "HEAD" or not ours:
        return
    if status >= 400:
        try:
            check_error_body(body)
        except BadAnswer as exc:
            raise BadAnswer(f"{exc}{where}") from None
        if status in (429, 503) and not headers.get("retry-after", "").isdigit():
            raise BadAnswer(f"{status} without Retry-After{where}")
    elif headers.get("content-type", "").startswith("text/event-stream"):
        try:
            check_event_stream(body)
        except BadAnswer as exc:
            raise BadAnswer(f"{exc}{where}") from None


@dataclass
class Tally:
    """What a fuzz run saw, for the report in docs/reliability.md."""

    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> str:
        parts = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.cases} requests ({parts})"
