"""One local Ray instance for the integration tier, serving HTTP on a free port the way
`make serve` does: HAProxy in front of the ingress replicas, started through
serve-inference-haproxy, with the Makefile's SERVE_ENV. `SERVE_TEST_PROXY=python` runs the tier
behind Serve's Python proxy instead (`make test` runs the protection tests that way too)."""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.fixtures_models import TinyModels, tiny_models

__all__ = ["tiny_models"]

REPO_ROOT = Path(__file__).resolve().parents[2]
PROXY_MODE = os.environ.get("SERVE_TEST_PROXY", "haproxy")
assert PROXY_MODE in ("haproxy", "python"), f"SERVE_TEST_PROXY={PROXY_MODE!r}: haproxy or python"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def makefile_serve_env() -> dict[str, str]:
    """The variables `make serve` starts Ray with (the Makefile's `SERVE_ENV := ...`)."""
    match = re.search(r"^SERVE_ENV := (.+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile has no SERVE_ENV line"
    return dict(word.split("=", 1) for word in match.group(1).split())


def ray_environment(mode: str, scratch: Path) -> dict[str, str]:
    """What Ray's processes must see for `mode`. HAProxy's ports and files are private to this
    instance, so a service on this machine (or an e2e test's) does not collide with it."""
    # As serve_config.yaml sets it for its Ingress: test apps come and go, and Ray's 30 s
    # default would hold every ingress replica that stops that long.
    env = {**makefile_serve_env(), "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
    if mode == "python":
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "0"
        return env
    env.update(
        RAY_SERVE_HAPROXY_BINARY_PATH=str(
            Path(sys.executable).with_name("serve-inference-haproxy")
        ),
        RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
        RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
        RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(scratch / "haproxy.cfg"),
        RAY_SERVE_HAPROXY_SOCKET_PATH=str(scratch / "admin.sock"),
        RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(scratch),
        RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(scratch / "server-state"),
    )
    return env


@dataclass(frozen=True)
class ServeCluster:
    """Where the tier's Serve instance answers HTTP, and behind which proxy."""

    http_port: int
    proxy_mode: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture(scope="package")
def serve_cluster() -> Iterator[ServeCluster]:
    import ray
    from ray import serve

    # Short: HAProxy refuses socket paths over 97 characters, and Ray adds a node id to it.
    scratch = Path(tempfile.mkdtemp(prefix="shp-", dir="/tmp"))
    saved = dict(os.environ)
    # Ray's processes (raylet, controller, proxies, replicas) inherit the environment that
    # ray.init starts them with; this process gets its own back afterwards.
    os.environ.update(ray_environment(PROXY_MODE, scratch))
    try:
        # Logical CPUs, not cores: tests place several small replicas on 2 cores.
        ray.init(
            num_cpus=16,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}},
        )
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield ServeCluster(http_port=port, proxy_mode=PROXY_MODE)
    finally:
        serve.shutdown()
        ray.shutdown()


TINY_GPT2 = "tiny-gpt2"  # continuous batching; its chat template
TINY_GPT2_STATIC = "tiny-gpt2-static"  # static batches; the same weights, the plain template
TINY_GPT2_APP = "tiny-gpt2"
TINY_GPT2_PREFIX = "/tiny-gpt2"


@pytest.fixture(scope="package")
def tiny_gpt2_url(serve_cluster: ServeCluster, tiny_models: TinyModels) -> Iterator[str]:
    """The tiny GPT-2 served at its defaults, under both batchers: one application for every
    module that checks answers against the same weights run directly (client libraries,
    logprobs), deployed once instead of once per module. Its tests only read from it."""
    from ray import serve

    from serve_app.app import build_app
    from tests.support.serve_apps import delete_app

    args = {
        "models": [
            {"name": TINY_GPT2, "task": "generation", "path": str(tiny_models.gpt2)},
            {
                "name": TINY_GPT2_STATIC,
                "task": "generation",
                "path": str(tiny_models.gpt2_plain),
                "generation_batching": "static",
            },
        ]
    }
    serve.run(build_app(args), name=TINY_GPT2_APP, route_prefix=TINY_GPT2_PREFIX)
    try:
        yield f"{serve_cluster.base_url}{TINY_GPT2_PREFIX}"
    finally:
        delete_app(TINY_GPT2_APP)


@pytest.fixture(scope="session", autouse=True)
def _no_ray_address() -> None:
    # A RAY_ADDRESS in the environment would attach tests to someone's cluster.
    os.environ.pop("RAY_ADDRESS", None)
