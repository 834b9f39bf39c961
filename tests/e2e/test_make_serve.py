"""`make serve`, as a user runs it (`serve run serve_config.yaml` behind HAProxy): it answers
embeddings, one Ctrl-C stops everything quickly, and a taken port is named in one line instead
of a long HAProxy traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.rss import process_label, service_processes
from benchmarks.service_process import config_for_port, free_port, is_ready, restore_sigint
from tests.support.ray_cluster import REPO_ROOT, child_env

STOP_WITHIN_S = 10.0


def start_make_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`make serve` in its own session and process group, as a terminal runs a foreground job."""
    with log.open("wb") as log_file:
        return subprocess.Popen(
            ["make", "-s", "serve", f"SERVE_CONFIG={config}"],
            cwd=REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=restore_sigint,
        )


def listeners(port: int) -> list[str]:
    return [
        f"{c.pid} {process_label(psutil.Process(c.pid)) if c.pid else '?'}"
        for c in psutil.net_connections(kind="inet")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
    ]


@pytest.mark.timeout(300)
def answers_embeddings(base_url: str) -> None:
    """The packaged model answers two inputs, in order, with 384 numbers each."""
    response = httpx.post(
        f"{base_url}/v1/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": ["hello from e2e", "second"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 384
    assert body["usage"]["prompt_tokens"] > 0
    models = httpx.get(f"{base_url}/v1/models", timeout=30).json()
    assert [card["id"] for card in models["data"]] == ["all-MiniLM-L6-v2"]


def test_make_serve_answers_and_one_ctrl_c_stops_everything_it_started_within_10_s(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = config_for_port(REPO_ROOT / "serve_config.yaml", port, tmp_path / "config.yaml")
    make = start_make_serve(config, tmp_path / "make.log")
    try:
        deadline_s = time.monotonic() + 240
        while not is_ready(f"http://127.0.0.1:{port}"):
            assert make.poll() is None, (tmp_path / "make.log").read_text()[-3000:]
            assert time.monotonic() < deadline_s, "make serve did not become ready"
            time.sleep(0.5)
        started = service_processes(make.pid)
        assert any("haproxy" in process_label(p) for p in started), "HAProxy is not in front"
        answers_embeddings(f"http://127.0.0.1:{port}")

        # Ctrl-C in a terminal: SIGINT to the foreground process group.
        ctrl_c_s = time.monotonic()
        os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=60)
        _, alive = psutil.wait_procs(started, timeout=60)
        stopped_s = time.monotonic() - ctrl_c_s
        print(f"make serve stopped {len(started)} processes in {stopped_s:.1f} s")
        assert not alive, [process_label(p) for p in alive]
        assert not listeners(port)
        with socket.socket() as probe:  # a new server can listen on the port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
        assert stopped_s <= STOP_WITHIN_S, (tmp_path / "make.log").read_text()[-3000:]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        for leftover in service_processes(make.pid):
            leftover.kill()


def test_make_serve_on_a_taken_port_names_the_holder_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = config_for_port(REPO_ROOT / "serve_config.yaml", port, tmp_path / "c.yaml")
        finished = subprocess.run(
            ["make", "-s", "serve", f"SERVE_CONFIG={config}"],
            cwd=REPO_ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert finished.returncode != 0
    [line] = [line for line in finished.stderr.splitlines() if "taken" in line]
    assert f"port {port} is taken by pid {os.getpid()} (" in line
    assert f"kill {os.getpid()}" in line
    assert "Ray" not in finished.stdout  # no Ray was started
