"""Stop sequences over streamed text: cut at the first match, hold back what might start one."""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    """Feed text deltas; get back what is safe to emit, and whether a stop sequence was hit.

    Text that could be the beginning of a stop sequence is held back until the next delta
    settles it, so a client never sees part of a stop sequence (OpenAI excludes it from output).
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._pending = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        text = self._pending + delta
        hits = [index for index in (text.find(stop) for stop in self._stops) if index >= 0]
        if hits:
            self._pending = ""
            return text[: min(hits)], True
        held = self._longest_partial_stop(text)
        self._pending = text[len(text) - held :]
        return text[: len(text) - held], False

    def flush(self) -> str:
        """The held-back text, once no more text is coming."""
        pending, self._pending = self._pending, ""
        return pending

    def _longest_partial_stop(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best
