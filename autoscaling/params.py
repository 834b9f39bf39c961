"""The policy's parameters: ``policy_kwargs`` in ``serve_config.yaml``, validated.

A wrong value fails when Serve instantiates the policy (at deploy time), with
a message that names the field and says what to write instead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoscaling.replica_stats import PERCENTILES


class PolicyParams(BaseModel):
    """Targets and damping of the queue-and-latency policy.

    Example ``policy_kwargs``::

        latency_target_ms: 250
        latency_percentile: 99
        target_queue_per_replica: 12
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_target_ms: float = Field(
        gt=0,
        description="Latency users are promised, in ms, at `latency_percentile`.",
    )
    latency_percentile: Literal[50, 90, 95, 99] = Field(
        default=95,
        description=f"Percentile the latency target applies to; one of {PERCENTILES}.",
    )
    target_queue_per_replica: float = Field(
        gt=0,
        description=(
            "Ongoing + queued requests one replica should hold. For a batched "
            "replica this is about the batch size that still meets the latency "
            "target (see docs/autoscaling.md), not Ray's default of 2."
        ),
    )
    upscale_delay_s: float = Field(
        default=2.0, ge=0, description="How long a scale-up need must last before acting."
    )
    downscale_delay_s: float = Field(
        default=30.0,
        ge=0,
        description="How long queue and latency must both allow a scale-down before each step.",
    )
    downscale_to_zero_delay_s: float | None = Field(
        default=None,
        ge=0,
        description=(
            "With min_replicas 0: how long the deployment must be idle (nothing ongoing or "
            "queued, no throughput reported) before its last replica goes. Unset: "
            "downscale_delay_s. Each return from zero costs a cold start."
        ),
    )
    max_scale_up_step: int = Field(
        default=16, ge=1, description="Most replicas added by one decision."
    )
    max_scale_down_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Most replicas removed by one decision, as a fraction of the target (min 1).",
    )
    latency_upscale_ratio: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description=(
            "Scale up once the observed percentile exceeds this fraction of the "
            "target; the gap left is headroom for start-up delay."
        ),
    )
    latency_downscale_ratio: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Latency allows a scale-down only below this fraction of the target.",
    )
    replica_capacity_rps: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Requests per second one replica sustains at the batch sizes it forms "
            "(autoscaling.simulator.service_model.ServiceModel.max_rate_rps, or a benchmark). "
            "When set, measured throughput also votes: the policy keeps "
            "throughput / (capacity * target_utilization) replicas."
        ),
    )
    target_utilization: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="Fraction of `replica_capacity_rps` to plan for; the rest absorbs bursts.",
    )
    burst_headroom_rps: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Requests per second kept spare for a sudden jump: the policy keeps "
            "(throughput + this) / replica_capacity_rps replicas, so a burst this size "
            "runs on replicas already started while new ones take their start-up time. "
            "Needs `replica_capacity_rps`; 0 = off."
        ),
    )
    downscale_headroom: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description=(
            "Queue and throughput allow removing replicas only if those left would "
            "run at most this fraction of their targets (hysteresis against flapping)."
        ),
    )
    min_latency_samples: int = Field(
        default=20,
        ge=1,
        description="A replica's latency counts only with this many requests in its window.",
    )
    metrics_max_age_s: float = Field(
        default=30.0,
        gt=0,
        description="Replica metrics older than this are ignored as stale.",
    )
    cooldown_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "After a scale change has taken effect (added replicas running, or "
            "replicas removed), no new decision for this long: Serve's look-back "
            "mean and the replicas' windows still describe the old count. Set it "
            "to at least look_back_period_s and the replicas' stats window."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _target_given(cls, values: Any) -> Any:
        # Serve passes policy_kwargs as written: a model's `slo` reaches them only through
        # `python -m serve_app.objective` (which `make serve` runs), so say so.
        if isinstance(values, dict) and "latency_target_ms" not in values:
            raise ValueError(
                "latency_target_ms is required: write the model's slo.latency_ms (or less) "
                "here, or let `python -m serve_app.objective serve_config.yaml out.yaml` fill "
                "it from the model's slo, then deploy out.yaml."
            )
        return values

    @model_validator(mode="after")
    def _ratios_ordered(self) -> PolicyParams:
        if self.latency_downscale_ratio >= self.latency_upscale_ratio:
            raise ValueError(
                f"latency_downscale_ratio ({self.latency_downscale_ratio}) must be below "
                f"latency_upscale_ratio ({self.latency_upscale_ratio}), or the policy "
                "would flap between scaling up and down; e.g. 0.5 and 0.8."
            )
        return self

    @model_validator(mode="after")
    def _burst_needs_capacity(self) -> PolicyParams:
        if self.burst_headroom_rps > 0 and self.replica_capacity_rps is None:
            raise ValueError(
                f"burst_headroom_rps ({self.burst_headroom_rps:g}) needs replica_capacity_rps "
                "to turn requests/s into replicas; set it (e.g. from "
                "ServiceModel.max_rate_rps() or a benchmark) or set burst_headroom_rps: 0."
            )
        return self
