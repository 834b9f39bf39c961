"""A model's objective is enforced by the running service, not only by `make serve`'s check:
deployed as `serve deploy` deploys a config, a policy whose target is looser than the model's
`slo` fails the deploy, and `serve status` says which field to change. The model starts at
zero replicas, so only the ingress (which refuses to start) runs."""

from __future__ import annotations

from typing import Any

import pytest
from ray import serve

from serve_app.objective import POLICY
from tests.integration.conftest import ServeCluster
from tests.support.serve_apps import delete_app, minilm_app, poll, submit

APP = "objective-deploy"
OBJECTIVE_MS = 250


def contradicting_config() -> dict[str, Any]:
    kwargs = {"latency_target_ms": 2 * OBJECTIVE_MS, "target_queue_per_replica": 8}
    autoscaling = {
        "min_replicas": 0,
        "max_replicas": 1,
        "policy": {"policy_function": POLICY, "policy_kwargs": kwargs},
    }
    model = {"slo": {"latency_ms": OBJECTIVE_MS, "percentile": 99}}
    return minilm_app(APP, "/objective-deploy", model, {"autoscaling_config": autoscaling})


@pytest.mark.timeout(180)
def test_serve_deploy_of_a_policy_looser_than_the_objective_fails_naming_the_field(
    serve_cluster: ServeCluster,
) -> None:
    submit(contradicting_config())
    try:

        def failed() -> Any:
            status = serve.status().applications.get(APP)
            return status if status is not None and status.status == "DEPLOY_FAILED" else None

        status = poll(failed, timeout_s=120)
        assert status is not None, serve.status().applications.get(APP)
        message = status.deployments["Ingress"].message
        print(f"serve status says: {message[-400:]}")
        assert "deployments[emb].autoscaling_config.policy.policy_kwargs" in message
        assert f"latency_target_ms ({2 * OBJECTIVE_MS}) is above" in message
        assert f"slo.latency_ms ({OBJECTIVE_MS})" in message
    finally:
        delete_app(APP)
