"""The gateway part of `args`: API keys, rate limits, time limits, client addresses, cache."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(_Section):
    """Where API keys come from. Never the YAML itself: an environment variable or a file."""

    api_keys_env: str | None = Field(
        default=None, description="Environment variable holding comma-separated API keys."
    )
    api_keys_file: str | None = Field(
        default=None,
        description="File with one API key per line; lines starting with '#' are comments.",
    )
    failed_attempts_burst: int = Field(
        default=10,
        ge=1,
        description="Failed authentications one client address may make before it is refused "
        "with 429 (keys it already used successfully still pass).",
    )
    failed_attempts_per_min: float = Field(
        default=6.0, gt=0, description="How fast a client address earns back failed attempts."
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


class TenantsConfig(_Section):
    """Fair shares of each model between tenants; on when `file` is set."""

    file: str | None = Field(
        default=None,
        description="YAML file declaring tenants (`tenants: {name: {weight, priority}}`); a key "
        "in api_keys_file joins one with the tenant's name after it on its line.",
    )
    max_in_flight_per_replica: int = Field(
        default=16,
        ge=1,
        description="Requests the ingress replicas together send to each running replica of a "
        "model at once; more wait in the fair queue. About the model's max_batch_size x "
        "parallel_passes. Each ingress replica lets out its share: this x the model's running "
        "replicas / the ingress replicas (at least 1), following both as they scale.",
    )
    max_in_flight_per_model: int | None = Field(
        default=None,
        ge=1,
        description="A fixed number of requests one ingress replica sends to a model at once, "
        "whatever its replica count; unset: max_in_flight_per_replica decides.",
    )
    max_waiting_per_model: int = Field(
        default=64,
        ge=1,
        description="Requests waiting in one model's fair queue; past it the tenant furthest "
        "over its share is refused with 429 (code tenant_share).",
    )


class GatewayConfig(_Section):
    auth: AuthConfig = AuthConfig()
    tenants: TenantsConfig = TenantsConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    cache: CacheConfig = CacheConfig()
    request_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Each request's deadline, from arrival to its last byte (streams included); "
        "a client may ask for less with `x-request-timeout`, never more.",
    )
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = Field(
        default=(),
        description="Addresses (CIDR) of proxies in front of the service whose "
        "X-Forwarded-For is believed; the service's own HAProxy needs no entry.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """Each entry an address or a CIDR network, refused with the reason when it is not."""
        if not isinstance(value, list | tuple):
            return value
        networks = []
        for entry in value:
            try:
                networks.append(ip_network(str(entry)))
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an address or a CIDR network: {exc}") from None
        return tuple(networks)
