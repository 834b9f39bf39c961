"""The gateway part of `args`: API keys, rate limits, time limits and the embedding cache."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(_Section):
    """Where API keys come from. Never the YAML itself: an environment variable or a file."""

    api_keys_env: str | None = Field(
        default=None, description="Environment variable holding comma-separated API keys."
    )
    api_keys_file: str | None = Field(
        default=None, description="File with one API key per line ('#' starts a comment)."
    )


class RateLimitConfig(_Section):
    """Per-key limits (per client address when no keys are configured). 0 turns one off."""

    requests_per_s: float = Field(default=0.0, ge=0.0)
    burst_requests: int | None = Field(
        default=None, ge=1, description="Bucket size; defaults to one second of requests."
    )
    tokens_per_min: int = Field(default=0, ge=0)


class CacheConfig(_Section):
    enabled: bool = True
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)


class GatewayConfig(_Section):
    auth: AuthConfig = AuthConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    cache: CacheConfig = CacheConfig()
    request_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Default deadline; a client may ask for less with `x-request-timeout`.",
    )
    max_request_timeout_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> GatewayConfig:
        if self.request_timeout_s > self.max_request_timeout_s:
            raise ValueError("request_timeout_s must not exceed max_request_timeout_s")
        return self
