"""serve-inference-haproxy: the lines it adds to Ray's HAProxy configuration, and the handoff."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig

from serve_app.gateway.client_address import CLIENT_ADDRESS_HEADER
from serve_app.gateway.haproxy_wrapper import (
    FRONTEND,
    HEADERS_TIMEOUT_S,
    UnknownConfig,
    amend,
    amend_file,
    is_wrapper,
)


@pytest.fixture
def rays_config(tmp_path: Path) -> Path:
    """The configuration file Ray 2.60's HAProxy manager writes for a service with no app yet,
    its sockets and state under `tmp_path`."""
    config = HAProxyConfig(
        socket_path=str(tmp_path / "admin.sock"),
        server_state_base=str(tmp_path),
        server_state_file=str(tmp_path / "server-state"),
        metrics_socket_path=str(tmp_path / "metrics.sock"),
        enable_hap_optimization=False,
    )
    path = tmp_path / "haproxy.cfg"
    HAProxyApi(config, config_file_path=str(path))._generate_config_file_internal()
    return path


def frontend_section(config: str) -> list[str]:
    lines = config.splitlines()
    start = lines.index(FRONTEND)
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    return [line.strip() for line in lines[start:end]]


def test_the_front_end_sets_the_client_address_and_a_header_timeout(rays_config: Path) -> None:
    section = frontend_section(amend(rays_config.read_text()))
    bind_at = next(i for i, line in enumerate(section) if line.startswith("bind "))
    assert f"http-request set-header {CLIENT_ADDRESS_HEADER} %[src]" in section[bind_at:]
    assert f"timeout http-request {HEADERS_TIMEOUT_S}s" in section


def test_amending_twice_changes_nothing_and_the_rest_is_kept(rays_config: Path) -> None:
    original = rays_config.read_text()
    once = amend(original)
    assert amend(once) == once
    assert [line for line in once.splitlines() if line not in original.splitlines()] == [
        line for line in once.splitlines() if "serve-inference" in line or "%[src]" in line
    ] + [f"    timeout http-request {HEADERS_TIMEOUT_S}s"]


def test_a_template_without_the_front_end_is_refused_with_the_way_out() -> None:
    with pytest.raises(UnknownConfig, match="RAY_SERVE_HAPROXY_BINARY_PATH"):
        amend("global\n    maxconn 10\n")


def test_haproxy_accepts_the_amended_configuration(rays_config: Path) -> None:
    config = rays_config
    amend_file(config)
    # The wrapper hands its arguments to the real HAProxy: -c checks the file and exits.
    checked = subprocess.run(
        [str(Path(sys.executable).with_name("serve-inference-haproxy")), "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert CLIENT_ADDRESS_HEADER in config.read_text()


def test_only_the_wrapper_counts_as_the_wrapper() -> None:
    assert is_wrapper("/venv/bin/serve-inference-haproxy")
    assert not is_wrapper("/usr/sbin/haproxy")
    assert not is_wrapper(None)
