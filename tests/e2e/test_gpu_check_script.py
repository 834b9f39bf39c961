"""The GPU check's `serve run` step, run on this CPU machine: it must see that no replica is on
a GPU, say so, and stop the service it started (a hang here would spend a GPU session's time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from benchmarks.service_process import config_for_port, free_port
from tests.support.ray_cluster import REPO_ROOT


@pytest.mark.timeout(300)
def test_the_serve_step_flags_cpu_replicas_and_stops_its_service(tmp_path: Path) -> None:
    port = free_port()
    config = config_for_port(REPO_ROOT / "serve_config.yaml", port, tmp_path / "config.yaml")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "SKIP_MODELS": "1",
        "SKIP_BENCH": "1",
        "SKIP_GENERATION": "1",
        "SERVE_CONFIG": str(config),
        "PORT": str(port),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    script = subprocess.Popen(
        [str(REPO_ROOT / "scripts" / "gpu_check.sh"), str(out)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = script.communicate(timeout=240)
    finally:
        if script.poll() is None:  # it hung: end the whole session it started, by its id
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
    assert script.returncode == 1, stderr
    assert "not on the GPU: ['all-MiniLM-L6-v2']" in stderr
    assert "'all-MiniLM-L6-v2': ('cpu', 'float32', 'none'" in stdout
    listed = json.loads((out / "models.json").read_text())["data"]
    assert [card["id"] for card in listed] == ["all-MiniLM-L6-v2"]
    answer = json.loads((out / "embedding_all-MiniLM-L6-v2.json").read_text())
    assert len(answer["data"][0]["embedding"]) == 384
    # The service went down through `serve run`'s own Ctrl-C path, not by being killed.
    assert "Got KeyboardInterrupt, shutting down" in (out / "serve_run.log").read_text()
