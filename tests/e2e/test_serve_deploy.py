"""`ray start --head` + `serve deploy serve_config.yaml`: the cluster path, with the real CLI."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from autoscaling.policy_metrics import DECISIONS, SIGNALS
from benchmarks.service_process import free_port
from tests.support.ray_cluster import REPO_ROOT, RayCluster, config_copy, start_head, venv_tool

MODEL = "all-MiniLM-L6-v2"
_http_bases: list[str] = []  # where the deploy test's application answers, for later tests


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    cluster = start_head(num_cpus=4, metrics_export_port=METRICS_PORT)
    try:
        yield cluster
    finally:
        cluster.stop()


class BoundedLoad:
    """A few clients posting embeddings in a thread until stopped; counts every outcome."""

    def __init__(self, base: str, clients: int = 4, max_requests: int = 5000) -> None:
        self.base = base
        self.clients = clients
        self.max_requests = max_requests
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, http: httpx.AsyncClient, index: int) -> None:
        sent = 0
        while not self._stop.is_set() and len(self.statuses) < self.max_requests:
            text = f"client {index} request {sent} during a redeploy"
            sent += 1
            try:
                response = await http.post(
                    f"{self.base}/v1/embeddings", json={"model": MODEL, "input": text}
                )
                self.statuses.append(response.status_code)
            except httpx.HTTPError as exc:
                self.statuses.append(type(exc).__name__)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            await asyncio.gather(*(self._client(http, i) for i in range(self.clients)))

    def __enter__(self) -> BoundedLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


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
    _http_bases.append(base)
    response = httpx.post(
        f"{base}/v1/embeddings", json={"model": MODEL, "input": "deployed on a cluster"}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 384
    [before] = model_replicas(cluster)

    def smaller_batches(config: dict[str, Any]) -> None:
        model = next(d for d in config["applications"][0]["deployments"] if d["name"] == MODEL)
        model["user_config"]["max_batch_size"] = 8

    with BoundedLoad(base) as load:  # requests in flight while the new config rolls out
        time.sleep(2)
        deploy(cluster, config_copy(tmp_path / "serve_config_v2.yaml", port, smaller_batches))
        deadline = time.monotonic() + 120
        batching: dict[str, Any] = {}
        while time.monotonic() < deadline:
            [card] = httpx.get(f"{base}/v1/models", timeout=30).json()["data"]
            batching = card.get("batching", {})
            if batching.get("max_batch_size") == 8:
                break
            time.sleep(1)
        time.sleep(2)
    assert batching.get("max_batch_size") == 8
    assert len(load.statuses) > 20
    assert set(load.statuses) == {200}, Counter(load.statuses)  # nothing failed or was dropped
    # Reconfigured in place, not restarted. The load may also have scaled the model up (its
    # policy holds a p99 of 250 ms; a full suite on 2 cores once saw a second replica here).
    after = {replica["replica_id"]: replica for replica in model_replicas(cluster)}
    assert before["replica_id"] in after, after
    assert after[before["replica_id"]]["pid"] == before["pid"]
    assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200


def scrape(cluster: RayCluster) -> str:
    return httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=30).text


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} ([0-9.e+-]+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def has_sample(text: str, name: str, **labels: str) -> bool:
    """Whether `name` has a sample whose labels include `labels` (whatever its value)."""
    return any(
        all(f'{k}="{v}"' in line for k, v in labels.items())
        for line in text.splitlines()
        if line.startswith(name + "{")
    )


@pytest.mark.timeout(300)
def test_custom_metrics_reach_prometheus(cluster: RayCluster) -> None:
    """Runs after the deploy test: the application is up and has served traffic."""
    base = next(iter(_http_bases))
    for i in range(20):
        httpx.post(f"{base}/v1/embeddings", json={"model": MODEL, "input": f"metric {i}"})
    httpx.post(f"{base}/v1/embeddings", json={"model": "missing", "input": "x"})
    deadline = time.monotonic() + 120
    text = ""
    while time.monotonic() < deadline:
        text = scrape(cluster)
        if metric_total(text, "ray_inference_requests_total", status="404") >= 1 and (
            metric_total(text, "ray_inference_autoscaler_decided_replicas", deployment=MODEL)
        ):
            break
        time.sleep(2)
    ok = metric_total(text, "ray_inference_requests_total", model=MODEL, status="200")
    assert ok >= 20
    assert metric_total(text, "ray_inference_requests_total", status="404") >= 1
    assert metric_total(text, "ray_inference_request_latency_s_count", model=MODEL) >= ok
    assert metric_total(text, "ray_inference_tokens_total", model=MODEL, direction="in") > 0
    assert metric_total(text, "ray_inference_cache_total", result="miss") >= 20
    passes = metric_total(text, "ray_inference_batch_size_count", model=MODEL)
    # Ray exports a histogram's sum from bucket midpoints; the size buckets are cut so every
    # midpoint is >= 1 input, which makes this hold for the exported figures too.
    inputs = metric_total(text, "ray_inference_batch_size_sum", model=MODEL)
    assert 1 <= passes <= inputs
    # Each histogram is exported on its own schedule: compare orders, not exact counts.
    assert metric_total(text, "ray_inference_forward_s_count", model=MODEL) >= 1
    assert metric_total(text, "ray_inference_batch_queue_wait_s_count", model=MODEL) >= passes
    # The autoscaling policy exports its standing from the controller: a count within
    # min/max, what each signal asks for, and exactly one current phase.
    decided = metric_total(text, "ray_inference_autoscaler_decided_replicas", deployment=MODEL)
    assert 1 <= decided <= 2  # min_replicas 1, max_replicas 2
    for signal in SIGNALS:
        assert has_sample(
            text, "ray_inference_autoscaler_signal_replicas", deployment=MODEL, signal=signal
        ), signal
    assert metric_total(text, "ray_inference_autoscaler_phase", deployment=MODEL) == 1
    # The Grafana dashboard is built on these names and Serve's own; all must exist.
    # Counters of rare events appear after their first event, and the objective's and tenants'
    # metrics only where a model declares an `slo` or tenants are declared (this config does
    # neither); those must at least be declared.
    dashboard = (REPO_ROOT / "deploy" / "grafana" / "serve-inference.json").read_text()
    declared = (REPO_ROOT / "serve_app" / "metrics.py").read_text()
    rare = {
        "ray_inference_fallbacks_total",
        "ray_inference_rejections_total",
        "ray_inference_objective_total",
        "ray_inference_tenant_latency_s",
    }
    for name in sorted(set(re.findall(r"ray_[a-z_]+", dashboard))):
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        if family == f"ray_{DECISIONS}":
            continue  # declared in autoscaling/policy_metrics.py; appears after a scale event
        if family in rare:
            assert f'"{family.removeprefix("ray_")}"' in declared, family
        else:
            assert family in text, f"dashboard metric {name} is not exported"
