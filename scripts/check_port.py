"""Before `make serve`: is the config's HTTP port free? If not, say in one line who holds it.

A second `make serve`, or an HAProxy left behind by a killed one, would otherwise fail deep in
Ray with a long HAProxy traceback ("cannot bind socket").
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

import psutil
import yaml


def configured_port(config_path: Path) -> tuple[str, int]:
    config = yaml.safe_load(config_path.read_text()) or {}
    http_options = config.get("http_options") or {}
    return str(http_options.get("host", "127.0.0.1")), int(http_options.get("port", 8000))


def holder(port: int) -> str:
    """`pid N (command line)` of the process listening on `port`, or a reason it is unknown."""
    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        return "another process (run as its user to see which)"
    for connection in connections:
        listening = connection.status == psutil.CONN_LISTEN
        if listening and connection.laddr and connection.laddr.port == port and connection.pid:
            try:
                command = " ".join(psutil.Process(connection.pid).cmdline())[:120]
            except psutil.Error:
                command = "?"
            return f"pid {connection.pid} ({command})"
    return "a process this user cannot see"


def main(argv: list[str]) -> int:
    config_path = Path(argv[1] if len(argv) > 1 else "serve_config.yaml")
    host, port = configured_port(config_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0" if host in ("0.0.0.0", "::") else host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            taken_by = holder(port)
            pid = taken_by.split()[1] if taken_by.startswith("pid ") else "PID"
            print(
                f"port {port} is taken by {taken_by}: stop it (`kill {pid}`; `ray stop` for a "
                f"Ray cluster) or set http_options.port in {config_path}",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
