"""A replica's own bounded record of the batch sizes it ran, for tests and operators."""

from __future__ import annotations

from collections import deque


class BatchRecord:
    """The sizes of the last `capacity` forward passes, oldest first."""

    def __init__(self, capacity: int = 4096) -> None:
        self._sizes: deque[int] = deque(maxlen=capacity)

    def add(self, size: int) -> None:
        self._sizes.append(size)

    def sizes(self) -> list[int]:
        return list(self._sizes)

    def clear(self) -> None:
        self._sizes.clear()
