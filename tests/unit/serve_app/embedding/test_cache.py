import numpy as np

from serve_app.embedding.cache import CachedEmbedding, EmbeddingCache


def entry(value: float, dims: int = 4) -> CachedEmbedding:
    return CachedEmbedding(np.full(dims, value, dtype=np.float32), token_count=3)


def test_hit_returns_what_was_stored_and_counts() -> None:
    cache = EmbeddingCache(max_bytes=10_000)
    assert cache.get("m@r1", "hello") is None
    cache.put("m@r1", "hello", entry(0.5))
    hit = cache.get("m@r1", "hello")
    assert hit is not None
    assert hit.vector.tolist() == [0.5] * 4
    assert hit.token_count == 3
    assert (cache.hits, cache.misses) == (1, 1)


def test_namespaces_keep_models_and_revisions_apart() -> None:
    cache = EmbeddingCache(max_bytes=10_000)
    cache.put("m@r1", "hello", entry(1.0))
    assert cache.get("m@r2", "hello") is None
    assert cache.get("other@r1", "hello") is None


def test_size_stays_under_the_bound_evicting_least_recently_used() -> None:
    cache = EmbeddingCache(max_bytes=3 * (200 + 16 + 2))
    for name in ("t1", "t2", "t3"):
        cache.put("m", name, entry(1.0))
    assert cache.get("m", "t1") is not None  # t1 is now the most recent
    cache.put("m", "t4", entry(1.0))
    assert cache.used_bytes <= cache.max_bytes
    assert cache.get("m", "t2") is None
    assert cache.get("m", "t1") is not None
    assert len(cache) == 3


def test_an_entry_larger_than_the_cache_is_not_stored() -> None:
    cache = EmbeddingCache(max_bytes=100)
    cache.put("m", "big", entry(1.0, dims=1000))
    assert len(cache) == 0
    assert cache.used_bytes == 0


def test_replacing_an_entry_keeps_the_byte_count_exact() -> None:
    cache = EmbeddingCache(max_bytes=10_000)
    cache.put("m", "x", entry(1.0))
    used = cache.used_bytes
    cache.put("m", "x", entry(2.0))
    assert cache.used_bytes == used
    cached = cache.get("m", "x")
    assert cached is not None
    assert cached.vector[0] == 2.0


def test_the_cache_owns_a_copy_not_a_view_of_the_batch() -> None:
    batch = np.ones((64, 4), dtype=np.float32)
    cache = EmbeddingCache(max_bytes=10_000)
    cache.put("m", "x", CachedEmbedding(batch[3], 1))
    cached = cache.get("m", "x")
    assert cached is not None
    assert cached.vector.base is None
