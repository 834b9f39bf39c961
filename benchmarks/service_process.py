"""Start `serve run` as a subprocess, wait until it answers, and stop it cleanly.

The service runs in its own session so that one signal to its process group
reaches only it, and so its Ray processes can be found (and, if they outlive
it, ended) by session id rather than by name. Also meant for e2e tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import yaml

from benchmarks.rss import process_label, service_processes
from benchmarks.target import require_loopback

READY_PATH = "/readyz"
_POLL_INTERVAL_S = 0.5
_LOG_TAIL_CHARS = 4000


class ServiceStartError(RuntimeError):
    """`serve run` exited or never became ready."""


@dataclass
class ServeHandle:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    config_path: Path
    _log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        self._log_file.flush()
        try:
            return self.log_path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_for_port(config_path: Path, port: int, dest: Path) -> Path:
    """A copy of the Serve config listening on 127.0.0.1:`port` only."""
    config: dict[str, Any] = yaml.safe_load(config_path.read_text())
    http_options = dict(config.get("http_options") or {})
    http_options.update(host="127.0.0.1", port=port)
    config["http_options"] = http_options
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def _serve_command() -> list[str]:
    """The `serve` CLI of this interpreter's Ray; by module where Ray was installed without its
    scripts beside the interpreter (`pip install --target`, as the GPU check does)."""
    candidate = Path(sys.executable).with_name("serve")
    if candidate.exists():
        return [str(candidate)]
    return [sys.executable, "-m", "ray.serve.scripts"]


def restore_sigint() -> None:
    """A shell's background job ignores SIGINT and children inherit that; `serve run` needs it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_serve_run(
    config_path: Path,
    port: int,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
) -> ServeHandle:
    """Launch `serve run` on a private copy of `config_path` bound to `port`.

    `--address local` starts a fresh Ray instance even when one from `ray start`
    is running on this machine, so the run measures only this service.
    """
    workdir = cwd or Path.cwd()
    log = log_path or workdir / f"serve_run_{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    private_config = config_for_port(config_path, port, log.with_suffix(".config.yaml"))
    child_env = {**os.environ, **(env or {})}
    child_env.pop("RAY_ADDRESS", None)
    child_env.setdefault("HF_HUB_OFFLINE", "1")
    child_env.setdefault("TRANSFORMERS_OFFLINE", "1")
    child_env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    log_file = log.open("ab")
    process = subprocess.Popen(
        [*_serve_command(), "run", "--address", "local", str(private_config)],
        cwd=workdir,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=restore_sigint,
    )
    return ServeHandle(process, f"http://127.0.0.1:{port}", log, private_config, log_file)


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(require_loopback(url) + READY_PATH, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(url: str, timeout_s: float, handle: ServeHandle | None = None) -> float:
    """Poll `/readyz` until 200; returns seconds waited.

    Polling is the only signal a separate process offers. Raises early if the
    `serve run` process has exited.
    """
    t0_s = time.monotonic()
    while time.monotonic() - t0_s < timeout_s:
        if handle is not None and handle.process.poll() is not None:
            raise ServiceStartError(
                f"serve run exited with {handle.process.returncode}:\n{handle.log_tail()}"
            )
        if is_ready(url):
            return time.monotonic() - t0_s
        time.sleep(_POLL_INTERVAL_S)
    tail = handle.log_tail() if handle is not None else ""
    raise ServiceStartError(f"{url}{READY_PATH} not ready after {timeout_s:.0f} s\n{tail}")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _end_leftovers(procs: list[psutil.Process], grace_s: float) -> list[str]:
    """Give Ray's processes `grace_s` to finish their own shutdown, then SIGTERM,
    then SIGKILL, those still alive. Returns what had to be ended."""
    _, alive = psutil.wait_procs([p for p in procs if p.is_running()], timeout=grace_s)
    ended = [f"{p.pid} {process_label(p)}" for p in alive]
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, still = psutil.wait_procs(alive, timeout=grace_s)
    for proc in still:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(still, timeout=grace_s)
    return ended


def stop(handle: ServeHandle, timeout_s: float = 60.0) -> int | None:
    """Ctrl-C the service (SIGINT to its group) and wait for it to exit.

    `serve run` shuts Serve and Ray down on SIGINT; Ray's own processes block
    SIGINT and are ended by that shutdown. Anything of the session still alive
    after the wait is terminated by pid. Returns `serve run`'s exit code.
    """
    if handle.process.poll() is None:
        _signal_group(handle.pid, signal.SIGINT)
        try:
            handle.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(handle.pid, signal.SIGTERM)
            try:
                handle.process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                _signal_group(handle.pid, signal.SIGKILL)
                handle.process.wait()
    # The session id outlives `serve run`, so this still finds its orphans.
    leftovers = _end_leftovers(service_processes(handle.pid), grace_s=10.0)
    for leftover in leftovers:
        print(f"ended leftover service process {leftover}", file=sys.stderr)
    handle._log_file.close()
    return handle.process.returncode
