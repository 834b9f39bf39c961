import pytest

from serve_app.errors import RateLimited
from serve_app.gateway.config import RateLimitConfig
from serve_app.gateway.rate_limit import RateLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def limiter(replicas: int = 1, **config: float) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(RateLimitConfig(**config), lambda: replicas, clock), clock  # type: ignore[arg-type]


def test_bucket_refills_at_its_rate_up_to_capacity() -> None:
    bucket = TokenBucket(rate_per_s=2.0, capacity=4, now_s=0.0)
    assert [bucket.take(1, 0.0) for _ in range(4)] == [0.0] * 4
    assert bucket.take(1, 0.0) == pytest.approx(0.5)
    assert bucket.take(1, 0.5) == 0.0
    assert bucket.remaining(100.0) == 4


def test_requests_over_the_burst_get_429_with_retry_after_and_headers() -> None:
    rate_limiter, clock = limiter(requests_per_s=2, burst_requests=3)
    for _ in range(3):
        headers = rate_limiter.admit("alice")
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimited) as caught:
        rate_limiter.admit("alice")
    assert caught.value.status_code == 429
    assert caught.value.headers["Retry-After"] == "1"
    assert caught.value.headers["x-ratelimit-remaining-requests"] == "0"
    rate_limiter.admit("bob")  # callers do not share buckets
    clock.now_s += 0.5
    rate_limiter.admit("alice")


def test_sustained_rate_is_enforced() -> None:
    rate_limiter, clock = limiter(requests_per_s=10, burst_requests=1)
    admitted = 0
    for _ in range(1000):  # 100 offered per second for 10 s
        clock.now_s += 0.01
        try:
            rate_limiter.admit("alice")
            admitted += 1
        except RateLimited:
            pass
    assert 99 <= admitted <= 101


def test_each_ingress_replica_enforces_its_share() -> None:
    rate_limiter, clock = limiter(replicas=4, requests_per_s=40, burst_requests=40)
    admitted = 0
    for _ in range(200):  # 10 s at 20/s offered to this replica
        clock.now_s += 0.05
        try:
            rate_limiter.admit("alice")
            admitted += 1
        except RateLimited:
            pass
    # Share = 10/s with a burst of 10: four replicas together admit ~40/s.
    assert 105 <= admitted <= 111


def test_tokens_per_minute_are_charged_after_the_fact() -> None:
    rate_limiter, clock = limiter(tokens_per_min=600)
    headers = rate_limiter.admit("alice")
    assert headers["x-ratelimit-limit-tokens"] == "600"
    rate_limiter.charge_tokens("alice", 700)  # one big request may overdraw
    with pytest.raises(RateLimited) as caught:
        rate_limiter.admit("alice")
    assert caught.value.headers["Retry-After"] == "11"  # 101 tokens at 10/s
    clock.now_s += 11
    rate_limiter.admit("alice")


def test_disabled_limits_admit_everything_without_headers() -> None:
    rate_limiter, _ = limiter()
    assert not rate_limiter.enabled
    assert all(rate_limiter.admit("alice") == {} for _ in range(1000))


def test_tracked_callers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serve_app.gateway.rate_limit.MAX_TRACKED_CALLERS", 10)
    rate_limiter, _ = limiter(requests_per_s=1)
    for caller in range(50):
        rate_limiter.admit(f"ip-{caller}")
    assert len(rate_limiter._callers) == 10
