"""The simulator against the real service: a spike, scaled to this machine, replayed open loop
on Ray with our policy, next to what the simulator predicts for the same arrivals, settings and
pass times (`benchmarks.autoscaling_replay`; `make bench-autoscaling` runs both traces and both
policies). Replica counts and lives come from Serve's controller, and the policy's decisions
must show in the controller's log with their readings.

The simulator is given the replica start-up measured in the run (it cannot know this machine's
process start); everything else is its own prediction. The bounds are wider than the 10% the
benchmark flags, for a shared 2-core machine: they catch a simulator that models the wrong
mechanism (a missing shutdown wait, a batching rule Ray does not follow), not noise.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

import pytest

from autoscaling.simulator.report import OURS
from benchmarks.autoscaling_replay import (
    DEPLOYMENT,
    compare_trace,
    relative_gap,
    replay_setup,
    replay_traces,
)
from tests.integration.conftest import ServeCluster
from tests.support.serve_apps import controller_log_lines

SETUP = replay_setup(base_rps=20.0, duration_s=60.0, seed=3)
SPIKE = replay_traces(SETUP)[0]
MAX_REPLICA_SECONDS_GAP = 0.2
# Absolute, in share of requests. The path's own latency, which the simulator leaves out, moves
# requests across the 250 ms line: in a full suite run Ray's p50 was 226 ms against 108 ms
# predicted, and the shares 51% against 61%; on a quiet machine 57% against 62%.
MAX_WITHIN_TARGET_GAP = 0.2
MAX_PEAK_GAP = 2


@pytest.mark.timeout(240)
def test_the_simulator_predicts_a_replayed_spike(serve_cluster: ServeCluster) -> None:
    comparison, _, _ = asyncio.run(compare_trace(SETUP, SPIKE, OURS, SETUP.default_setting))
    real, simulated = comparison.real, comparison.simulated
    figures = {
        "real": asdict(real.row),
        "simulated": asdict(simulated.row),
        "peak_replicas": [real.peak_replicas, simulated.peak_replicas],
        "replica_start_s": comparison.startup_delay_s,
        "flagged": comparison.flagged,
    }
    print(f"\nFIGURES simulator_replay {json.dumps(figures)}")

    assert comparison.failed == 0
    # The spike needs more replicas than the base: the policy must have scaled on Ray too.
    assert real.peak_replicas > SETUP.shared_fields(SPIKE)["initial_replicas"]
    assert abs(real.peak_replicas - simulated.peak_replicas) <= MAX_PEAK_GAP
    gap = relative_gap(real.row.replica_seconds, simulated.row.replica_seconds)
    assert gap <= MAX_REPLICA_SECONDS_GAP, comparison
    within = real.row.share_within_target - simulated.row.share_within_target
    assert abs(within) <= MAX_WITHIN_TARGET_GAP, comparison
    # Each decision is in the controller log (the dashboard's Serve tab), with its readings.
    decisions = controller_log_lines(f"Autoscaling {DEPLOYMENT}: scale up")
    assert decisions, "the policy's scale-up decision is not in the controller log"
    assert "queue" in decisions[0]
    assert "p99" in decisions[0]
