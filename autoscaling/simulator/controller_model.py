"""The Serve controller's side of autoscaling, as the simulator runs it.

Uses Ray's own code wherever Ray's code does not read the wall clock:
``AutoscalingConfig``/``AutoscalingPolicy`` resolve and instantiate the policy
exactly as the controller does, ``AutoscalingContext`` is Ray's class, and
the wrapper below is ``ray.serve.autoscaling_policy._apply_autoscaling_config``
line for line, except that it passes the simulated clock to Ray's
``_apply_delay_logic`` (the controller's copy reads ``time.time()``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ray.serve._private.autoscaling_state import _resolve_policy_callable
from ray.serve._private.common import DeploymentID, ReplicaID, TimeStampedValue
from ray.serve._private.constants import CONTROL_LOOP_INTERVAL_S
from ray.serve.autoscaling_policy import (
    _apply_delay_logic,
    _apply_scaling_factors,
    _extract_internal_policy_state,
    _get_cold_start_scale_up_replicas,
)
from ray.serve.config import AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

__all__ = [
    "CONTROL_LOOP_INTERVAL_S",
    "DeploymentID",
    "PolicyFn",
    "ReplicaID",
    "TimeStampedValue",
    "apply_bounds",
    "autoscaling_config",
    "queue_latency_config",
    "ray_default_config",
    "resolve_policy",
]

PolicyFn = Callable[[AutoscalingContext], tuple[int, dict[str, Any]]]
RawMetrics = dict[str, dict[ReplicaID, list[TimeStampedValue]]]

QUEUE_LATENCY_POLICY_PATH = "autoscaling.policy:QueueLatencyPolicy"


def autoscaling_config(**fields: Any) -> AutoscalingConfig:
    """``AutoscalingConfig`` without the deprecation warning for ``metrics_interval_s``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return AutoscalingConfig(**fields)


def ray_default_config(target_ongoing_requests: float, **fields: Any) -> AutoscalingConfig:
    """Ray's default policy (queue length per replica) with its one knob set."""
    return autoscaling_config(target_ongoing_requests=target_ongoing_requests, **fields)


def queue_latency_config(policy_kwargs: Mapping[str, Any], **fields: Any) -> AutoscalingConfig:
    """Our policy; Ray's own delays are zeroed because the policy applies its own."""
    policy = AutoscalingPolicy(
        policy_function=QUEUE_LATENCY_POLICY_PATH, policy_kwargs=dict(policy_kwargs)
    )
    return autoscaling_config(upscale_delay_s=0.0, downscale_delay_s=0.0, policy=policy, **fields)


def resolve_policy(config: AutoscalingConfig) -> PolicyFn:
    """The callable the controller would run each tick for ``config``."""
    policy = _resolve_policy_callable(config.policy)

    def wrapped(ctx: AutoscalingContext) -> tuple[int, dict[str, Any]]:
        cold_start = _get_cold_start_scale_up_replicas(ctx)
        if cold_start is not None:
            return cold_start, ctx.policy_state
        policy_state = ctx.policy_state.copy()
        desired, user_state = policy(ctx)
        desired = _apply_scaling_factors(desired, ctx.current_num_replicas, config)
        internal = _extract_internal_policy_state(policy_state)
        final = desired
        if not (ctx.current_num_replicas == 0 and desired > 0):
            final, internal = _apply_delay_logic(
                max(0, desired),
                ctx.target_num_replicas,
                config,
                internal,
                _now=ctx.current_time,
            )
        return final, {**user_state, **internal}

    return wrapped


def apply_bounds(decision: float, config: AutoscalingConfig) -> int:
    """What ``DeploymentAutoscalingState`` does with a decision (no target capacity)."""
    num = math.ceil(decision) if isinstance(decision, float) else int(decision)
    return max(config.min_replicas, min(config.max_replicas, num))
