"""Scale to zero on a real Serve instance: our policy with ``min_replicas: 0``.

First the simulated accelerator, with a load time standing in for loading weights and the warm-up
pass: the deployment starts at zero, goes back to zero once idle and not before its idle delay; a
request sent while none runs waits at the handle (where the ingress sends it) and is answered after
one cold start, within the budget that docs/autoscaling.md states; a caller whose deadline is
shorter than the cold start gets its timeout, not a hang. The cold start is printed in its parts:
the controller's decision and placement, the load, and the first answer.

Then the whole service with the packaged MiniLM at zero: through the gateway, a request whose
deadline passes during the cold start gets the API's 504, and the next one a 200 after a real
cold start (load, warm-up, first pass), timed. Before that, probes at zero (`/readyz`,
`/v1/models`) answer without starting the model; after it, `/v1/models` shows its card.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httpx
import pytest
from ray import serve
from ray.serve import Deployment
from ray.serve._private.common import ReplicaState

from deployments.simulated.deployment import SimulatedAccelerator
from tests.integration.conftest import ServeCluster
from tests.support.answers import check_error_body
from tests.support.serve_apps import delete_app, deploy, minilm_app, wait_until

APP = "scale-to-zero"
DEPLOYMENT = "SimulatedAccelerator"
LOAD_S = 2.0  # weights + warm-up of the simulated model
IDLE_TO_ZERO_S = 3.0
# Cold start = controller tick and placement + LOAD_S + first pass; the overhead beyond LOAD_S
# measured 2.7-3.4 s here (2 shared cores). docs/autoscaling.md states the budget as LOAD_S + 10 s.
COLD_START_OVERHEAD_BUDGET_S = 10.0
ZERO_WITHIN_S = 40.0

AUTOSCALING_CONFIG: dict[str, Any] = {
    "min_replicas": 0,
    "max_replicas": 2,
    "upscale_delay_s": 0,
    "downscale_delay_s": 0,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 1.0,
    "policy": {
        "policy_function": "autoscaling.policy:QueueLatencyPolicy",
        "policy_kwargs": {
            "latency_target_ms": 250,
            "target_queue_per_replica": 8,
            "upscale_delay_s": 0.5,
            "downscale_delay_s": 1.0,
            "downscale_to_zero_delay_s": IDLE_TO_ZERO_S,
            "cooldown_s": 1.0,
            "metrics_max_age_s": 3.0,
        },
    },
}


def running_replicas() -> int:
    app = serve.status().applications[APP]
    return app.deployments[DEPLOYMENT].replica_states.get(ReplicaState.RUNNING, 0)


def replicas() -> int:
    """Replicas in any state: starting and stopping ones count too."""
    return sum(serve.status().applications[APP].deployments[DEPLOYMENT].replica_states.values())


def replicas_over(seconds: float) -> list[tuple[float, int]]:
    """(seconds, RUNNING replicas) sampled every 0.25 s for ``seconds``."""
    start = time.monotonic()
    seen: list[tuple[float, int]] = []
    while time.monotonic() - start < seconds:
        seen.append((round(time.monotonic() - start, 2), running_replicas()))
        time.sleep(0.25)
    return seen


async def cold_start(handle: Any) -> dict[str, float]:
    """One request sent at zero replicas, timed, with the replica's own load times."""
    sent_at = time.time()
    reply = await asyncio.wait_for(handle.infer.remote("first"), 60)
    answered_at = time.time()
    assert reply["payload"] == "first"
    times = await handle.lifecycle.remote()
    return {
        "total_s": answered_at - sent_at,
        "decide_and_place_s": times["init_started_at"] - sent_at,
        "load_s": times["loaded_at"] - times["init_started_at"],
        "first_answer_s": answered_at - times["loaded_at"],
    }


async def times_out_at_zero(handle: Any, timeout_s: float) -> float:
    """Seconds until a call with a deadline shorter than a cold start gives up."""
    started = time.monotonic()
    response = handle.infer.remote("impatient")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(response, timeout_s)
    response.cancel()
    return time.monotonic() - started


async def scenario() -> dict[str, Any]:
    handle = serve.get_app_handle(APP)
    # A deadline shorter than the load: the caller gets its timeout while the replica starts.
    gave_up_s = await times_out_at_zero(handle, 0.5)
    # Whatever that request started has to go again before the cold start is timed.
    await asyncio.to_thread(wait_until, lambda: replicas() == 0, ZERO_WITHIN_S, "no replica")
    timing = await cold_start(handle)
    # Idle again: one replica for the idle delay (no flapping), then zero.
    after_answer = await asyncio.to_thread(replicas_over, IDLE_TO_ZERO_S - 0.5)
    zero_s = await asyncio.to_thread(
        wait_until, lambda: replicas() == 0, ZERO_WITHIN_S, "zero after the answer"
    )
    return {
        "gave_up_s": gave_up_s,
        "timing": timing,
        "after_answer": after_answer,
        "zero_after_answer_s": IDLE_TO_ZERO_S - 0.5 + zero_s,
    }


@pytest.mark.timeout(180)
def test_idle_deployment_goes_to_zero_and_the_next_request_pays_one_cold_start(
    serve_cluster: ServeCluster,
) -> None:
    app = (
        cast(Deployment, SimulatedAccelerator)
        .options(
            autoscaling_config=AUTOSCALING_CONFIG,
            max_queued_requests=16,
            ray_actor_options={"num_cpus": 0},
        )
        .bind(stats_window_s=2.0, load_s=LOAD_S)
    )
    # min_replicas 0 without initial_replicas: Serve starts the deployment at zero.
    serve.run(app, name=APP, route_prefix=None)
    try:
        assert replicas() == 0
        outcome = asyncio.run(scenario())
        print(f"scale to zero: {outcome}")
        timing = outcome["timing"]
        assert outcome["gave_up_s"] < 2.0, outcome
        assert LOAD_S <= timing["total_s"] <= LOAD_S + COLD_START_OVERHEAD_BUDGET_S, outcome
        assert timing["load_s"] >= LOAD_S, outcome
        assert all(count == 1 for _, count in outcome["after_answer"]), outcome
        assert outcome["zero_after_answer_s"] >= IDLE_TO_ZERO_S, outcome
    finally:
        delete_app(APP)


GATEWAY_APP = "zero-gateway"
GATEWAY_PREFIX = "/zero-gateway"
MODEL = "emb"
MODEL_COLD_START_BUDGET_S = 90.0  # a generous multiple of what a 2-core machine shows


def model_replicas() -> int:
    deployments = serve.status().applications[GATEWAY_APP].deployments
    return sum(deployments[MODEL].replica_states.values())


def probe_at_zero(base_url: str, seconds: float) -> None:
    """GET /readyz and /v1/models every 0.5 s for ``seconds`` (longer than Serve takes to start a
    replica for a request that waits at zero), checking each answer and that the model stays at
    zero (before, the first /readyz started a replica within about 2 s)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        ready = httpx.get(f"{base_url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "models": [MODEL], "scaled_to_zero": [MODEL]}
        [card] = httpx.get(f"{base_url}/v1/models", timeout=10).json()["data"]
        assert (card["id"], card["ready"], card["state"]) == (MODEL, False, "scaled_to_zero"), card
        assert model_replicas() == 0, f"woken {time.monotonic() - started:.1f}s into the probes"
        time.sleep(0.5)


def gateway_config() -> dict[str, Any]:
    autoscaling = {**AUTOSCALING_CONFIG, "max_replicas": 1}
    deployment = {"max_queued_requests": 16, "autoscaling_config": autoscaling}
    return minilm_app(GATEWAY_APP, GATEWAY_PREFIX, {"name": MODEL}, deployment)


@pytest.mark.timeout(240)
def test_through_the_gateway_a_model_at_zero_answers_504_past_the_deadline_then_200(
    serve_cluster: ServeCluster,
) -> None:
    deploy(gateway_config())
    base_url = f"{serve_cluster.base_url}{GATEWAY_PREFIX}"
    url = f"{base_url}/v1/embeddings"
    body = {"model": MODEL, "input": "first after idle"}
    try:
        assert model_replicas() == 0
        # The proxy can route the app's prefix a moment after the app runs (404 until then).
        healthz = f"{base_url}/healthz"
        wait_until(lambda: httpx.get(healthz, timeout=10).status_code == 200, 30, "the route")
        probe_at_zero(base_url, 6.0)
        # Both requests arrive at zero: the first gives up at its deadline, the second waits
        # for the cold start the first one set off.
        started = time.monotonic()
        late = httpx.post(url, json=body, headers={"x-request-timeout": "0.5"}, timeout=30)
        assert late.status_code == 504, late.text
        assert check_error_body(late.content)["code"] == "deadline_exceeded"
        assert model_replicas() <= 1
        first = httpx.post(url, json=body, timeout=MODEL_COLD_START_BUDGET_S + 30)
        cold_start_s = time.monotonic() - started
        print(f"MiniLM cold start through the gateway: {cold_start_s:.1f}s")
        assert first.status_code == 200, first.text
        assert len(first.json()["data"][0]["embedding"]) == 384
        assert cold_start_s <= MODEL_COLD_START_BUDGET_S
        # Running again (it idles for IDLE_TO_ZERO_S first): asked, with its card.
        [card] = httpx.get(f"{base_url}/v1/models", timeout=10).json()["data"]
        assert (card["ready"], card["state"], card["dimensions"]) == (True, "ready", 384), card
    finally:
        delete_app(GATEWAY_APP)
