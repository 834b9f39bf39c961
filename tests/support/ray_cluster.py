"""A real Ray cluster for e2e tests: `ray start --head --block` in its own session, on free ports.

Stopping ends exactly the processes of that session (never anything found by name).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import yaml

from benchmarks.rss import service_processes
from benchmarks.service_process import free_port, restore_sigint

REPO_ROOT = Path(__file__).resolve().parents[2]


def ray_auth_headers() -> dict[str, str]:
    """Ray 2.60 turns token auth on by default and keeps the token in ~/.ray/auth_token."""
    token_file = Path.home() / ".ray" / "auth_token"
    token = os.environ.get("RAY_AUTH_TOKEN") or (
        token_file.read_text().strip() if token_file.is_file() else ""
    )
    return {"Authorization": f"Bearer {token}"} if token else {}


def venv_tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def child_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class RayNode:
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, grace_s: float = 2.0) -> None:
        """SIGTERM every process of the node's session, then SIGKILL what is left (a test
        cluster has nothing to save: waiting 20 s for a slow process cost that per cluster, and
        the GCS, the raylet and `ray start --block` outlive a SIGTERM by more than 6 s anyway)."""
        members = service_processes(self.process.pid)
        for proc in members:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(members, timeout=grace_s)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=grace_s)
        self.process.wait(timeout=grace_s)
        self.log_file.close()


@dataclass
class RayCluster:
    """A head node (and optional workers) of one Ray cluster on this machine."""

    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    head: RayNode
    workers: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def run(self, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        """A Ray or Serve CLI command against this cluster."""
        return subprocess.run(
            list(args),
            cwd=REPO_ROOT,
            env={**child_env(), "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token"},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def add_worker(self, num_cpus: float, resources: dict[str, float] | None = None) -> RayNode:
        command = [
            venv_tool("ray"),
            "start",
            "--block",
            f"--address={self.address}",
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources or {})}",  # Ray parses this as JSON only
        ]
        # A joining node must present the cluster's token (Ray 2.60 turns token auth on).
        env = {**child_env(), "RAY_AUTH_MODE": "token"}
        node = _launch(command, self.temp_dir / f"worker{len(self.workers)}.log", env)
        self.workers.append(node)
        return node

    def serve_details(self) -> dict[str, Any]:
        """Serve's own view of applications, deployments and replicas (the dashboard's API)."""
        response = httpx.get(
            f"{self.dashboard_url}/api/serve/applications/", headers=ray_auth_headers(), timeout=30
        )
        response.raise_for_status()
        details: dict[str, Any] = response.json()
        return details

    def stop_worker(self, node: RayNode) -> None:
        """End one worker node, as a lost machine would: its raylet, replicas and proxy go."""
        self.workers.remove(node)
        node.stop()

    def state_list(self, resource: str) -> list[dict[str, Any]]:
        """Ray's state API over the dashboard's REST endpoint (what `ray list RESOURCE` reads)."""
        response = httpx.get(
            f"{self.dashboard_url}/api/v0/{resource}",
            params={"limit": 10000},
            headers=ray_auth_headers(),
            timeout=30,
        )
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()["data"]["result"]["result"]
        return entries

    def wait_for_alive_nodes(self, count: int, timeout_s: float = 120) -> list[dict[str, Any]]:
        """The ALIVE nodes once there are `count` of them (a joining worker takes seconds)."""
        deadline = time.monotonic() + timeout_s
        alive: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            alive = [n for n in self.state_list("nodes") if n["state"] == "ALIVE"]
            if len(alive) == count:
                return alive
            for node in [self.head, *self.workers]:
                if node.process.poll() is not None:
                    raise RuntimeError(f"a Ray node exited:\n{node.log_tail()}")
            time.sleep(0.5)
        raise RuntimeError(f"expected {count} ALIVE nodes, have {alive}")

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.head.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _launch(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> RayNode:
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=child_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=restore_sigint,
    )
    return RayNode(process, log_path, log_file)


def start_head(
    num_cpus: float = 4,
    metrics_export_port: int | None = None,
    env: dict[str, str] | None = None,
) -> RayCluster:
    """A head node in its own session; `env` adds variables its Ray processes see."""
    # Ray's unix sockets live under the temp dir, whose path must stay short.
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    gcs_port, dashboard_port = free_port(), free_port()
    command = [
        venv_tool("ray"),
        "start",
        "--head",
        "--block",
        f"--port={gcs_port}",
        f"--num-cpus={num_cpus}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    if metrics_export_port is not None:
        command.append(f"--metrics-export-port={metrics_export_port}")
    head = _launch(command, temp_dir / "head.log", {**child_env(), **(env or {})})
    cluster = RayCluster(temp_dir, gcs_port, dashboard_port, head)
    _wait_for_dashboard(cluster)
    return cluster


def _wait_for_dashboard(cluster: RayCluster, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cluster.head.process.poll() is not None:
            raise RuntimeError(f"ray start exited:\n{cluster.head.log_tail()}")
        try:
            version = httpx.get(
                f"{cluster.dashboard_url}/api/version", headers=ray_auth_headers(), timeout=2
            )
            if version.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tail = cluster.head.log_tail()
    cluster.stop()
    raise RuntimeError(f"the Ray dashboard did not come up:\n{tail}")


def config_copy(dest: Path, http_port: int, edit: Any = None) -> Path:
    """serve_config.yaml on 127.0.0.1:`http_port`, optionally edited by `edit(config)`."""
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    if edit is not None:
        edit(config)
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest
