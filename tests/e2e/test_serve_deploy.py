"""`ray start --head` + `serve deploy serve_config.yaml`: the cluster path, with the real CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from benchmarks.service_process import free_port
from tests.e2e.ray_cluster import RayCluster, config_copy, start_head, venv_tool

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    cluster = start_head(num_cpus=4)
    try:
        yield cluster
    finally:
        cluster.stop()


def serve_status(cluster: RayCluster) -> dict[str, Any]:
    result = cluster.run(venv_tool("serve"), "status", "--address", cluster.dashboard_url)
    assert result.returncode == 0, result.stderr
    status: dict[str, Any] = yaml.safe_load(result.stdout)
    return status


def wait_running(cluster: RayCluster, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = serve_status(cluster)
        app = (status.get("applications") or {}).get("default") or {}
        if app.get("status") == "RUNNING":
            return status
        assert app.get("status") != "DEPLOY_FAILED", app
        time.sleep(1)
    raise AssertionError(f"the application did not reach RUNNING: {status}")


def deploy(cluster: RayCluster, config: Path) -> None:
    result = cluster.run(
        venv_tool("serve"), "deploy", str(config), "--address", cluster.dashboard_url
    )
    assert result.returncode == 0, result.stdout + result.stderr


def model_replicas(cluster: RayCluster) -> list[dict[str, Any]]:
    app = cluster.serve_details()["applications"]["default"]
    replicas: list[dict[str, Any]] = app["deployments"][MODEL]["replicas"]
    return replicas


@pytest.mark.timeout(600)
def test_serve_deploy_runs_and_reconfigures_live(cluster: RayCluster, tmp_path: Path) -> None:
    port = free_port()
    deploy(cluster, config_copy(tmp_path / "serve_config.yaml", port))
    status = wait_running(cluster)
    deployments = status["applications"]["default"]["deployments"]
    assert deployments["Ingress"]["status"] == "HEALTHY"
    assert deployments[MODEL]["status"] == "HEALTHY"

    base = f"http://127.0.0.1:{port}"
    response = httpx.post(
        f"{base}/v1/embeddings", json={"model": MODEL, "input": "deployed on a cluster"}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 384
    [before] = model_replicas(cluster)

    def smaller_batches(config: dict[str, Any]) -> None:
        model = next(d for d in config["applications"][0]["deployments"] if d["name"] == MODEL)
        model["user_config"]["max_batch_size"] = 8

    deploy(cluster, config_copy(tmp_path / "serve_config_v2.yaml", port, smaller_batches))
    deadline = time.monotonic() + 120
    batching: dict[str, Any] = {}
    while time.monotonic() < deadline:
        [card] = httpx.get(f"{base}/v1/models", timeout=30).json()["data"]
        batching = card.get("batching", {})
        if batching.get("max_batch_size") == 8:
            break
        time.sleep(1)
    assert batching.get("max_batch_size") == 8
    [after] = model_replicas(cluster)
    assert after["replica_id"] == before["replica_id"]  # reconfigured in place, not restarted
    assert after["pid"] == before["pid"]
    assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200
