"""`serve run serve_config.yaml`, the laptop path, started as a real subprocess."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks.service_process import free_port, start_serve_run, stop, wait_ready
from tests.support.ray_cluster import REPO_ROOT


@pytest.mark.timeout(300)
def test_serve_run_answers_embeddings(tmp_path: Path) -> None:
    port = free_port()
    service = start_serve_run(
        REPO_ROOT / "serve_config.yaml", port, log_path=tmp_path / "serve.log", cwd=REPO_ROOT
    )
    try:
        wait_ready(service.url, timeout_s=180, handle=service)
        response = httpx.post(
            f"{service.url}/v1/embeddings",
            json={"model": "all-MiniLM-L6-v2", "input": ["hello from e2e", "second"]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert [item["index"] for item in body["data"]] == [0, 1]
        assert len(body["data"][0]["embedding"]) == 384
        assert body["usage"]["prompt_tokens"] > 0
        models = httpx.get(f"{service.url}/v1/models", timeout=30).json()
        assert [card["id"] for card in models["data"]] == ["all-MiniLM-L6-v2"]
    finally:
        exit_code = stop(service)
    assert exit_code is not None
    assert service.process.poll() is not None
