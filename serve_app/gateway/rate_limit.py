"""Per-caller token buckets for requests per second and tokens per minute.

With several ingress replicas each enforces its share: the configured rate divided by the
ingress replica count, so the whole service admits about the configured rate when Serve's
router spreads callers' requests evenly over the replicas.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from serve_app.errors import RateLimited, retry_after_header
from serve_app.gateway.config import RateLimitConfig

MAX_TRACKED_CALLERS = 100_000
V = TypeVar("V")


class TokenBucket:
    """`capacity` tokens refilled at `rate_per_s`; may go negative when charged after the fact."""

    def __init__(self, rate_per_s: float, capacity: float, now_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = capacity
        self._updated_s = now_s

    def _refill(self, now_s: float) -> None:
        elapsed_s = max(0.0, now_s - self._updated_s)
        self.tokens = min(self.capacity, self.tokens + elapsed_s * self.rate_per_s)
        self._updated_s = now_s

    def take(self, amount: float, now_s: float) -> float:
        """Take `amount` if there is that much; else take nothing and return seconds to wait."""
        self._refill(now_s)
        if self.tokens + 1e-9 >= amount:  # refills summed in float steps land a hair short
            self.tokens -= amount
            return 0.0
        return self.seconds_until(amount, now_s)

    def seconds_until(self, amount: float, now_s: float) -> float:
        """How long until the bucket holds `amount` (0 if it does now)."""
        self._refill(now_s)
        return max(0.0, amount - self.tokens) / self.rate_per_s

    def charge(self, amount: float, now_s: float) -> None:
        self._refill(now_s)
        self.tokens -= amount

    def remaining(self, now_s: float) -> int:
        self._refill(now_s)
        return max(0, math.floor(self.tokens))

    def seconds_until_full(self, now_s: float) -> float:
        self._refill(now_s)
        return (self.capacity - self.tokens) / self.rate_per_s


class RecentCallers(Generic[V]):
    """State per caller for the `MAX_TRACKED_CALLERS` most recently seen; older ones are
    forgotten (and start afresh), so a flood of new addresses cannot grow memory."""

    def __init__(self, new: Callable[[], V]) -> None:
        self._new = new
        self._capacity = MAX_TRACKED_CALLERS
        self._entries: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, caller: str) -> V:
        entry = self._entries.get(caller)
        if entry is None:
            entry = self._entries[caller] = self._new()
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(caller)
        return entry


@dataclass
class _CallerBuckets:
    requests: TokenBucket | None
    tokens: TokenBucket | None


def _reset(seconds: float) -> str:
    return f"{max(0.0, seconds):.3g}s"


class RateLimiter:
    def __init__(
        self,
        config: RateLimitConfig,
        replica_count: Callable[[], int] = lambda: 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._replica_count = replica_count
        self._clock = clock
        self._callers = RecentCallers(self._new_buckets)

    @property
    def enabled(self) -> bool:
        return self._config.requests_per_s > 0 or self._config.tokens_per_min > 0

    def _new_buckets(self) -> _CallerBuckets:
        share = max(1, self._replica_count())
        now_s = self._clock()
        return _CallerBuckets(self._request_bucket(share, now_s), self._token_bucket(share, now_s))

    def _request_bucket(self, share: int, now_s: float) -> TokenBucket | None:
        rate_per_s = self._config.requests_per_s / share
        if rate_per_s <= 0:
            return None
        burst = self._config.burst_requests or max(1, math.ceil(self._config.requests_per_s))
        return TokenBucket(rate_per_s, max(1.0, burst / share), now_s)

    def _token_bucket(self, share: int, now_s: float) -> TokenBucket | None:
        per_minute = self._config.tokens_per_min / share
        if per_minute <= 0:
            return None
        return TokenBucket(per_minute / 60.0, per_minute, now_s)

    def admit(self, caller: str) -> dict[str, str]:
        """Count one request for `caller`; raise 429 with Retry-After if over a limit.

        Returns OpenAI's `x-ratelimit-*` headers for the response.
        """
        if not self.enabled:
            return {}
        now_s = self._clock()
        buckets = self._callers.get(caller)
        if buckets.tokens is not None and buckets.tokens.remaining(now_s) <= 0:
            # Admit again once the bucket is back to one whole token.
            wait_s = buckets.tokens.seconds_until(1, now_s)
            raise self._limited("tokens per minute", wait_s, self.headers(buckets, now_s))
        if buckets.requests is not None:
            wait_s = buckets.requests.take(1, now_s)
            if wait_s > 0:
                raise self._limited("requests per second", wait_s, self.headers(buckets, now_s))
        return self.headers(buckets, now_s)

    def charge_tokens(self, caller: str, tokens: int) -> float | None:
        """Count tokens a request used, known only as the model runs; returns what is left of
        the caller's tokens-per-minute budget (negative once overspent), None without one."""
        if self._config.tokens_per_min <= 0:
            return None
        now_s = self._clock()
        bucket = self._callers.get(caller).tokens
        if bucket is None:
            return None
        bucket.charge(tokens, now_s)
        return bucket.tokens

    def meter(self, caller: str) -> TokenMeter:
        return TokenMeter(self, caller)

    @staticmethod
    def headers(buckets: _CallerBuckets, now_s: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in (("requests", buckets.requests), ("tokens", buckets.tokens)):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(math.floor(bucket.capacity))
                headers[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining(now_s))
                headers[f"x-ratelimit-reset-{name}"] = _reset(bucket.seconds_until_full(now_s))
        return headers

    @staticmethod
    def _limited(limit: str, wait_s: float, headers: dict[str, str]) -> RateLimited:
        error = RateLimited(f"Rate limit reached for {limit}; retry in {wait_s:.2f}s.")
        error.headers = {**headers, **retry_after_header(wait_s)}
        return error


class TokenMeter:
    """The tokens one request has used so far, charged to its caller as they are counted, so a
    stream pays for its tokens while it runs and can be stopped once the budget is spent."""

    def __init__(self, limiter: RateLimiter, caller: str) -> None:
        self._limiter = limiter
        self._caller = caller
        self.charged = 0

    def charge(self, tokens: int) -> bool:
        """Charge `tokens` more; False when the caller has now spent more than its budget."""
        if tokens <= 0:
            return True
        self.charged += tokens
        left = self._limiter.charge_tokens(self._caller, tokens)
        return left is None or left >= 0

    def overspent(self) -> RateLimited:
        return RateLimited(
            "Rate limit reached for tokens per minute while streaming; the answer was cut."
        )
