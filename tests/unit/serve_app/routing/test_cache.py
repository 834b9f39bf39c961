import asyncio
import gc

import numpy as np
import pytest

from serve_app.config import ModelSpec
from serve_app.routing.cache import CachedModels, CachedResult, ResultCache, pair_key
from serve_app.routing.registry import ServedModel
from tests.support.fakes import FakeRerankBackend


def entry(value: float, dims: int = 4) -> CachedResult:
    return CachedResult(np.full(dims, value, dtype=np.float32), token_count=3)


def test_hit_returns_what_was_stored_and_counts() -> None:
    cache = ResultCache(max_bytes=10_000)
    assert cache.get("m@r1", "hello") is None
    cache.put("m@r1", "hello", entry(0.5))
    hit = cache.get("m@r1", "hello")
    assert hit is not None
    assert hit.values.tolist() == [0.5] * 4
    assert hit.token_count == 3
    assert (cache.hits, cache.misses) == (1, 1)


def test_namespaces_keep_models_and_revisions_apart() -> None:
    cache = ResultCache(max_bytes=10_000)
    cache.put("m@r1", "hello", entry(1.0))
    assert cache.get("m@r2", "hello") is None
    assert cache.get("other@r1", "hello") is None


def test_size_stays_under_the_bound_evicting_least_recently_used() -> None:
    cache = ResultCache(max_bytes=3 * (200 + 16 + 2))
    for name in ("t1", "t2", "t3"):
        cache.put("m", name, entry(1.0))
    assert cache.get("m", "t1") is not None  # t1 is now the most recent
    cache.put("m", "t4", entry(1.0))
    assert cache.used_bytes <= cache.max_bytes
    assert cache.get("m", "t2") is None
    assert cache.get("m", "t1") is not None
    assert len(cache) == 3


def test_an_entry_larger_than_the_cache_is_not_stored() -> None:
    cache = ResultCache(max_bytes=100)
    cache.put("m", "big", entry(1.0, dims=1000))
    assert len(cache) == 0
    assert cache.used_bytes == 0


def test_replacing_an_entry_keeps_the_byte_count_exact() -> None:
    cache = ResultCache(max_bytes=10_000)
    cache.put("m", "x", entry(1.0))
    used = cache.used_bytes
    cache.put("m", "x", entry(2.0))
    assert cache.used_bytes == used
    cached = cache.get("m", "x")
    assert cached is not None
    assert cached.values[0] == 2.0


def test_the_cache_owns_a_copy_not_a_view_of_the_batch() -> None:
    batch = np.ones((64, 4), dtype=np.float32)
    cache = ResultCache(max_bytes=10_000)
    cache.put("m", "x", CachedResult(batch[3], 1))
    cached = cache.get("m", "x")
    assert cached is not None
    assert cached.values.base is None


def rerank_model(backend: FakeRerankBackend, cache: bool = True) -> ServedModel:
    return ServedModel(
        ModelSpec(name="ranker", task="rerank", path="/unused", cache=cache), backend
    )


def test_rerank_scores_are_cached_per_query_and_document() -> None:
    backend = FakeRerankBackend()
    cached = CachedModels(ResultCache(max_bytes=100_000), metrics=None)
    model = rerank_model(backend)
    first = asyncio.run(cached.rerank(model, "q", ["a", "b", "a"]))
    second = asyncio.run(cached.rerank(model, "q", ["c", "b"]))
    other_query = asyncio.run(cached.rerank(model, "q2", ["a"]))
    # Each distinct pair reaches the model once; the query is part of the key.
    assert backend.calls == [("q", ["a", "b"]), ("q", ["c"]), ("q2", ["a"])]
    expected = [FakeRerankBackend.score("q", d) for d in ("a", "b", "a")]
    assert [s.score for s in first] == pytest.approx([s.score for s in expected])
    assert [s.tokens for s in first] == [s.tokens for s in expected]
    assert second[1].score == pytest.approx(first[1].score)
    assert other_query[0].score == pytest.approx(FakeRerankBackend.score("q2", "a").score)


def test_pair_keys_do_not_collide_where_query_and_document_meet() -> None:
    assert pair_key("ab", "c") != pair_key("a", "bc")


def test_a_model_with_cache_off_is_always_asked() -> None:
    backend = FakeRerankBackend()
    cached = CachedModels(ResultCache(max_bytes=100_000), metrics=None)
    model = rerank_model(backend, cache=False)
    for _ in range(2):
        asyncio.run(cached.rerank(model, "q", ["a"]))
    assert backend.calls == [("q", ["a"]), ("q", ["a"])]


def test_stored_entries_add_nothing_to_the_cycle_collectors_work() -> None:
    # Every full collection in the ingress walks what the collector tracks; a full cache holds
    # tens of thousands of entries.
    cache = ResultCache(max_bytes=10_000_000)
    gc.collect()
    tracked_before = len(gc.get_objects())
    for index in range(2000):
        cache.put("m", f"text {index}", entry(float(index)))
    gc.collect()
    assert len(cache) == 2000
    assert len(gc.get_objects()) - tracked_before < 100
