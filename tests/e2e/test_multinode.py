"""The same serve_config.yaml across two Ray nodes: placement, losing a node, pending replicas.

One real cluster for the module: `ray start --head` (3 logical CPUs) plus a worker node
started with `ray start --address=...` (1 CPU and a custom resource only it has). Both run on
this machine in their own process sessions; the worker is stopped by ending exactly its
session's processes, as if its machine went away. Requests go to 127.0.0.1 only.

Capacity arithmetic (what the assertions rely on):
- head: 3 CPUs = Ingress (0.25) + two model replicas (1 CPU each) + 0.75 spare;
- worker: 1 CPU = one model replica.
With 2 model replicas Serve's SPREAD placement puts one on each node; when the worker goes,
the head's replica keeps serving and Serve starts the lost one again on the head.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from benchmarks.service_process import free_port
from tests.e2e.ray_cluster import RayCluster, config_copy, start_head, venv_tool

MODEL = "all-MiniLM-L6-v2"
HEAD_CPUS = 3
WORKER_CPUS = 1
WORKER_RESOURCE = "worker_only"  # a custom resource only the worker node has
RESCHEDULE_LIMIT_S = 120.0  # replica lost with its node -> RUNNING again on the head
REQUEST_TIMEOUT_S = 30.0

Config = dict[str, Any]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    cluster = start_head(num_cpus=HEAD_CPUS)
    try:
        cluster.add_worker(WORKER_CPUS, {WORKER_RESOURCE: 1})
        cluster.wait_for_alive_nodes(2)
        yield cluster
    finally:
        cluster.stop()  # every node's session, workers first, then the head


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


# --- config variants, generated from serve_config.yaml ---------------------------------------


def _deployment(config: Config, name: str) -> Config:
    deployments: list[Config] = config["applications"][0]["deployments"]
    return next(d for d in deployments if d["name"] == name)


def ingress_on_head(config: Config) -> None:
    """Pin the Ingress to the head with Ray's built-in head-node resource, so losing the worker
    loses model replicas only. (On KubeRay the head usually runs no replicas; there you give
    the Ingress 2 replicas instead.)"""
    options = _deployment(config, "Ingress").setdefault("ray_actor_options", {})
    options["resources"] = {"node:__internal_head__": 0.001}


def model_replicas(count: int) -> Callable[[Config], None]:
    def edit(config: Config) -> None:
        ingress_on_head(config)
        _deployment(config, MODEL)["num_replicas"] = count

    return edit


# --- reading the cluster ---------------------------------------------------------------------


def deploy(cluster: RayCluster, config: Path) -> None:
    result = cluster.run(
        venv_tool("serve"), "deploy", str(config), "--address", cluster.dashboard_url
    )
    assert result.returncode == 0, result.stdout + result.stderr


def serve_status(cluster: RayCluster) -> Config:
    result = cluster.run(venv_tool("serve"), "status", "--address", cluster.dashboard_url)
    assert result.returncode == 0, result.stderr
    status: Config = yaml.safe_load(result.stdout)
    return status


def deployment_details(cluster: RayCluster, name: str = MODEL) -> Config:
    """Serve's REST view of one deployment: status, message, replicas with their node_id."""
    details: Config = cluster.serve_details()["applications"]["default"]["deployments"][name]
    return details


def running_nodes(cluster: RayCluster, name: str = MODEL) -> list[str]:
    """The node_id of each RUNNING replica of a deployment."""
    replicas = deployment_details(cluster, name)["replicas"]
    return [r["node_id"] for r in replicas if r["state"] == "RUNNING"]


def node_ids(cluster: RayCluster) -> tuple[str, str]:
    """(head, worker) node ids from the Ray state API, told apart by the worker's resource."""
    alive = cluster.wait_for_alive_nodes(2)
    [head] = [n["node_id"] for n in alive if n["is_head_node"]]
    [worker] = [n["node_id"] for n in alive if WORKER_RESOURCE in n["resources_total"]]
    return head, worker


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, cluster: RayCluster) -> float:
    """Seconds until `check()` holds; fails with Serve's status when it does not in time."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout_s}s: {serve_status(cluster)}")


def app_running(cluster: RayCluster) -> bool:
    app = (serve_status(cluster).get("applications") or {}).get("default") or {}
    assert app.get("status") != "DEPLOY_FAILED", app
    return app.get("status") == "RUNNING"


def embed(base: str, text: str) -> httpx.Response:
    """One request on a fresh connection, so the kernel picks a proxy for each (SO_REUSEPORT)."""
    return httpx.post(
        f"{base}/v1/embeddings", json={"model": MODEL, "input": text}, timeout=REQUEST_TIMEOUT_S
    )


@dataclass
class Prober:
    """Sequential requests in a background thread, each recorded as (time sent, status).

    Status 0 is a connection-level failure (no HTTP answer). Bounded: one request at a time,
    a timeout on each, a pause between them, and it stops when told."""

    base: str
    pause_s: float = 0.1
    results: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=REQUEST_TIMEOUT_S + 5)

    def _run(self) -> None:
        count = 0
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status = embed(self.base, f"probe {count}").status_code
            except httpx.HTTPError:
                status = 0
            self.results.append((sent, status))
            count += 1
            self._stop.wait(self.pause_s)

    def since(self, t: float) -> list[int]:
        return [status for sent, status in self.results if sent >= t]


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.timeout(420)
def test_replicas_span_nodes_and_survive_losing_the_worker(
    cluster: RayCluster, port: int, tmp_path: Path
) -> None:
    head, worker = node_ids(cluster)
    base = f"http://127.0.0.1:{port}"
    deploy(cluster, config_copy(tmp_path / "two_replicas.yaml", port, model_replicas(2)))
    startup_s = wait_for("application RUNNING", lambda: app_running(cluster), 300, cluster)
    print(f"two model replicas RUNNING after {startup_s:.1f}s")

    # Placement: model replicas on both nodes, the Ingress on the head.
    assert sorted(running_nodes(cluster)) == sorted([head, worker])
    assert running_nodes(cluster, "Ingress") == [head]
    for i in range(8):
        response = embed(base, f"spread {i}")
        assert response.status_code == 200, response.text
        assert len(response.json()["data"][0]["embedding"]) == 384

    with Prober(base) as prober:
        time.sleep(2)
        stop_started = time.monotonic()
        cluster.stop_worker(cluster.workers[0])
        gone = time.monotonic()
        print(f"worker node stopped in {gone - stop_started:.1f}s")

        def back_on_head() -> bool:
            return running_nodes(cluster) == [head, head]

        reschedule_s = wait_for("2 replicas on the head", back_on_head, RESCHEDULE_LIMIT_S, cluster)
        print(f"replica count restored on the head {reschedule_s:.1f}s after the worker was gone")
        time.sleep(3)

    dead = [n for n in cluster.state_list("nodes") if n["node_id"] == worker]
    assert [n["state"] for n in dead] == ["DEAD"]
    during = prober.since(stop_started)
    after = prober.since(gone)
    print(f"probes: {len(prober.results)}; during stop: {during[: len(during) - len(after)]}")
    print(f"after: {len(after)} requests, failures {[s for s in after if s != 200]}")
    assert after, "the prober sent nothing after the worker stopped"
    assert all(status == 200 for status in after), after
    assert app_running(cluster)
