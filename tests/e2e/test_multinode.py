"""The same serve_config.yaml across two Ray nodes: placement, losing a node, pending replicas.

One real cluster for the module: `ray start --head` (3 logical CPUs) plus a worker node
started with `ray start --address=...` (1 CPU and a custom resource only it has). Both run on
this machine in their own process sessions; the worker is stopped by ending exactly its
session's processes, as if its machine went away. Requests go to 127.0.0.1 only.

The variants deployed are serve_config.yaml with three edits, made here: the Ingress pinned
to the head (Ray's built-in `node:__internal_head__` resource), the model deployment's
replica count fixed (its autoscaling bounds set to min = max, so the project's policy still
runs), and http_options on 127.0.0.1 and a free port. Resources stay as the file says.

Capacity arithmetic (what the assertions rely on), with the file's CPUs per replica:
- head: 3 CPUs hold the Ingress and at least two model replicas;
- worker: 1 CPU holds one model replica.
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
from tests.support.ray_cluster import REPO_ROOT, RayCluster, config_copy, start_head, venv_tool

Config = dict[str, Any]

MODEL = "all-MiniLM-L6-v2"
HEAD_CPUS = 3
WORKER_CPUS = 1
ADDED_WORKER_CPUS = 2  # the node that joins in the pending-replicas test
WORKER_RESOURCE = "worker_only"  # a custom resource only the first worker node has
WANTED_REPLICAS = 6  # more than the cluster holds
RESCHEDULE_LIMIT_S = 120.0  # replica lost with its node -> RUNNING again on the head
PENDING_REPORT_LIMIT_S = 150.0
# Serve reports replicas it cannot place after 30 s, and again every 30 s; 5 s here.
SLOW_STARTUP_REPORT_ENV = {
    "RAY_SERVE_SLOW_STARTUP_WARNING_S": "5",
    "RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S": "5",
}
REQUEST_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    cluster = start_head(num_cpus=HEAD_CPUS, env=SLOW_STARTUP_REPORT_ENV)
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


SERVE_CONFIG: Config = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
INGRESS_CPUS = float(_deployment(SERVE_CONFIG, "Ingress")["ray_actor_options"]["num_cpus"])
MODEL_CPUS = float(_deployment(SERVE_CONFIG, MODEL)["ray_actor_options"]["num_cpus"])


def replicas_fitting(node_cpus: float, is_head: bool) -> int:
    """Model replicas a node holds; the head also holds the Ingress."""
    free = node_cpus - (INGRESS_CPUS if is_head else 0.0)
    return int((free + 1e-9) // MODEL_CPUS)


def ingress_on_head(config: Config) -> None:
    """Pin the Ingress to the head with Ray's built-in head-node resource, so losing the worker
    loses model replicas only. (On KubeRay the head usually runs no replicas; there you give
    the Ingress 2 replicas instead.)"""
    options = _deployment(config, "Ingress").setdefault("ray_actor_options", {})
    options["resources"] = {"node:__internal_head__": 0.001}


def model_replicas(count: int) -> Callable[[Config], None]:
    """Exactly `count` model replicas: autoscaling bounds min = max = count, if it autoscales."""

    def edit(config: Config) -> None:
        ingress_on_head(config)
        model = _deployment(config, MODEL)
        autoscaling = model.get("autoscaling_config")
        if autoscaling is None:
            model["num_replicas"] = count
        else:
            autoscaling.update(min_replicas=count, max_replicas=count)
            autoscaling.pop("initial_replicas", None)
            model.pop("num_replicas", None)

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


def ingress_errors(cluster: RayCluster, chars: int = 6000) -> str:
    """The end of the Ingress replicas' logs from the first ERROR on: why a request got a 500."""
    logs = sorted((cluster.temp_dir / "session_latest" / "logs" / "serve").glob("*Ingress*.log"))
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    first_error = text.find("ERROR")
    return text[first_error : first_error + chars] if first_error >= 0 else "(no ERROR logged)"


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
    failures: list[str] = field(default_factory=list)  # the bodies of answers other than 200
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
                response = embed(self.base, f"probe {count}")
                status = response.status_code
                if status != 200:
                    self.failures.append(f"{status} {response.text[:300]}")
            except httpx.HTTPError as exc:
                status = 0
                self.failures.append(repr(exc))
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
    assert replicas_fitting(HEAD_CPUS, is_head=True) >= 2, "the head must hold 2 replicas"
    assert replicas_fitting(WORKER_CPUS, is_head=False) >= 1, "the worker must hold 1 replica"
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
    assert all(status == 200 for status in after), (prober.failures, ingress_errors(cluster))
    assert app_running(cluster)


def replica_capacity(cluster: RayCluster) -> int:
    """Model replicas the ALIVE nodes hold together."""
    alive = [n for n in cluster.state_list("nodes") if n["state"] == "ALIVE"]
    return sum(
        replicas_fitting(float(n["resources_total"]["CPU"]), bool(n["is_head_node"])) for n in alive
    )


@pytest.mark.timeout(360)
def test_scaling_past_the_cluster_leaves_replicas_pending_and_keeps_serving(
    cluster: RayCluster, port: int, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{port}"
    capacity = replica_capacity(cluster)
    assert 1 <= capacity < WANTED_REPLICAS
    deploy(cluster, config_copy(tmp_path / "many.yaml", port, model_replicas(WANTED_REPLICAS)))

    # Replicas that fit start; the rest wait for resources. After 5 s Serve says so, in
    # words the operator sees in `serve status` (and the autoscaler sees as resource demand).
    def settled_pending() -> bool:
        message = deployment_details(cluster)["message"]
        return len(running_nodes(cluster)) == capacity and "to be scheduled" in message

    waited_s = wait_for(
        "pending replicas reported", settled_pending, PENDING_REPORT_LIMIT_S, cluster
    )
    print(f"{capacity} of {WANTED_REPLICAS} replicas RUNNING, rest pending, after {waited_s:.1f}s")

    status = serve_status(cluster)["applications"]["default"]
    model = status["deployments"][MODEL]
    print(f"serve status: app {status['status']}, {MODEL} {model['status']}: {model['message']}")
    assert status["status"] == "DEPLOYING"
    assert model["status"] in {"UPSCALING", "UPDATING"}  # UPDATING: bounds came by redeploy
    assert "waiting for the cluster to auto-scale" in model["message"]
    assert model["replica_states"] == {
        "RUNNING": capacity,
        "STARTING": WANTED_REPLICAS - capacity,
    }
    # Ray's view: the replicas Serve could not place are actors waiting for a node, which is
    # the resource demand a cluster autoscaler reads.
    pending_actors = [
        a
        for a in cluster.state_list("actors")
        if a["state"] == "PENDING_CREATION" and a["class_name"].endswith(f":{MODEL}")
    ]
    assert len(pending_actors) == WANTED_REPLICAS - capacity
    for i in range(8):
        response = embed(base, f"while pending {i}")
        assert response.status_code == 200, response.text

    # A new node is what the cluster autoscaler (KubeRay) would add: pending replicas land on it.
    cluster.add_worker(ADDED_WORKER_CPUS)
    placed = capacity + replicas_fitting(ADDED_WORKER_CPUS, is_head=False)
    added_s = wait_for(
        "pending replicas placed on the new node",
        lambda: len(running_nodes(cluster)) == min(placed, WANTED_REPLICAS),
        PENDING_REPORT_LIMIT_S,
        cluster,
    )
    print(f"a {ADDED_WORKER_CPUS}-CPU node joined: {placed} replicas RUNNING {added_s:.1f}s later")
    response = embed(base, "after the new node")
    assert response.status_code == 200, response.text
