"""What the policy decides each tick, and what it remembers between ticks: the replica count with
its direction, reason, phase and readings, and the timers handed back to Serve as `policy_state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from autoscaling.signals import PolicyContext, ReplicaReadings, finite_or_none

Direction = Literal["up", "down", "hold"]
# Where the policy stands, one word for dashboards (the reason says the rest).
Phase = Literal[
    "steady",
    "scaling_up",
    "scaling_down",
    "scaling_to_zero",
    "idle_delay",
    "upscale_delay",
    "downscale_delay",
    "starting",
    "cooldown",
    "at_max",
    "at_min",
    "bounds",
    "no_clock",
]


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between ticks (keys prefixed ``qlp_``)."""

    up_since_s: float | None = None  # a scale-up need began (delay timer)
    down_since_s: float | None = None  # a scale-down allowance began (delay timer)
    pending_up: bool = False  # replicas added by the last scale-up are still starting
    settled_at_s: float | None = None  # the last change took effect
    descending: bool = False  # scale-down steps since the last full downscale delay
    idle_since_s: float | None = None  # nothing ongoing, queued or completed since (to-zero timer)
    at_zero: bool = False  # seen with no replica and none wanted, not yet started again

    @classmethod
    def from_mapping(cls, state: Mapping[str, Any]) -> PolicyState:
        # Foreign keys (Ray's own delay counters) are ignored; junk reads as unset.
        return cls(
            up_since_s=finite_or_none(state.get("qlp_up_since_s")),
            down_since_s=finite_or_none(state.get("qlp_down_since_s")),
            pending_up=state.get("qlp_pending_up") is True,
            settled_at_s=finite_or_none(state.get("qlp_settled_at_s")),
            descending=state.get("qlp_descending") is True,
            idle_since_s=finite_or_none(state.get("qlp_idle_since_s")),
            at_zero=state.get("qlp_at_zero") is True,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "qlp_up_since_s": self.up_since_s,
            "qlp_down_since_s": self.down_since_s,
            "qlp_pending_up": self.pending_up,
            "qlp_settled_at_s": self.settled_at_s,
            "qlp_descending": self.descending,
            "qlp_idle_since_s": self.idle_since_s,
            "qlp_at_zero": self.at_zero,
        }

    def steady(self) -> PolicyState:
        """No delay timer running; what the last change did stays."""
        return replace(self, up_since_s=None, down_since_s=None)

    def settle(self, ctx: PolicyContext, now: float) -> PolicyState:
        """Note the moment a change took effect: a scale-up's replicas all running, or the
        first replica of a cold start (which Serve starts without asking the policy, so
        only ``at_zero`` tells). After a cold start the look-back mean and the replica's
        window hold the backlog of the start-up, drained in moments: the cooldown keeps
        the policy from adding replicas for it."""
        state = self
        if self.pending_up and ctx.current_num_replicas >= ctx.target_num_replicas:
            state = replace(state, pending_up=False, settled_at_s=now)
        if ctx.current_num_replicas == 0 and ctx.target_num_replicas == 0:
            return replace(state, at_zero=True)
        if state.at_zero and ctx.current_num_replicas > 0:
            return replace(state, at_zero=False, settled_at_s=now)
        return state


@dataclass(frozen=True)
class Decision:
    """A replica count with the reason and the readings behind it."""

    num_replicas: int
    direction: Direction
    reason: str
    state: PolicyState
    queue: float | None
    readings: ReplicaReadings | None
    phase: Phase = "steady"
    needs: Mapping[str, int] = field(default_factory=dict)  # replicas each signal asks for

    def state_dict(self) -> dict[str, Any]:
        """``policy_state`` to hand back to Serve, readable in logs as it is."""
        readings = self.readings
        return {
            **self.state.to_dict(),
            "qlp_decision": self.direction,
            "qlp_reason": self.reason,
            "qlp_queue": self.queue,
            "qlp_latency_ms": readings.latency_ms if readings else None,
            "qlp_queue_wait_ms": readings.queue_wait_ms if readings else None,
            "qlp_throughput_rps": readings.throughput_rps if readings else None,
            "qlp_phase": self.phase,
            "qlp_needs": dict(self.needs),
        }
