"""One local Ray instance per test session, with Serve's HTTP proxy on a free port."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServeCluster:
    """Where the session's Serve instance answers HTTP."""

    http_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture(scope="session")
def serve_cluster() -> Iterator[ServeCluster]:
    import ray
    from ray import serve

    # Logical CPUs, not cores: tests place several small replicas on 2 cores.
    ray.init(
        num_cpus=16,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield ServeCluster(http_port=port)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _no_ray_address() -> None:
    # A RAY_ADDRESS in the environment would attach tests to someone's cluster.
    os.environ.pop("RAY_ADDRESS", None)
