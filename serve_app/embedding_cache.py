"""A byte-bounded LRU cache of embeddings at the ingress, one entry per (model, revision, text).

Repeated inputs skip the model. Options that change the vector after the model (`dimensions`,
`encoding_format`) are applied to cached vectors, so one entry serves them all.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_ENTRY_OVERHEAD_BYTES = 200  # key tuple, dict slot, array header: a rough, fixed cost


@dataclass(frozen=True)
class CachedEmbedding:
    vector: npt.NDArray[np.float32]
    token_count: int


CacheKey = tuple[str, str]  # (model namespace: name + revision, input text)


class EmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, CachedEmbedding] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _size(key: CacheKey, entry: CachedEmbedding) -> int:
        return len(key[1].encode("utf-8")) + entry.vector.nbytes + _ENTRY_OVERHEAD_BYTES

    def get(self, namespace: str, text: str) -> CachedEmbedding | None:
        key = (namespace, text)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, namespace: str, text: str, entry: CachedEmbedding) -> None:
        key = (namespace, text)
        size = self._size(key, entry)
        if size > self.max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.used_bytes -= self._size(key, previous)
        # Own a compact copy: a row view would keep the whole response batch alive.
        stored = CachedEmbedding(np.array(entry.vector, dtype=np.float32), entry.token_count)
        self._entries[key] = stored
        self.used_bytes += size
        while self.used_bytes > self.max_bytes:
            old_key, old_entry = self._entries.popitem(last=False)
            self.used_bytes -= self._size(old_key, old_entry)
