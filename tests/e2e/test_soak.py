"""A short `make soak`: the real service under steady load, judged by the soak's own verdict."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.ray_cluster import REPO_ROOT, child_env

SOAK_S = 30
RATE_RPS = 25
# A smoke, not the ten-minute soak (`make soak`, 2 MiB/min): it judges the last 15 s, about six
# RSS samples, and the model replica's RSS moves there in allocator-sized steps (one of 3 MiB read
# as +22 MiB/min in two full-suite runs of a service that passes the long soak), so only a gross
# leak fails it: about 40 KB per request at this rate, as keeping each request's activations or
# a copy of its batch would.
MAX_SLOPE_MIB_PER_MIN = 60.0


@pytest.mark.timeout(400)
def test_a_short_soak_passes_its_verdict(tmp_path: Path) -> None:
    out_dir = tmp_path / "soak"
    env = {
        **child_env(),
        "SOAK_S": str(SOAK_S),
        "SOAK_RATE": str(RATE_RPS),
        "MAX_SLOPE": str(MAX_SLOPE_MIB_PER_MIN),
        "OUT_DIR": str(out_dir),
    }
    finished = subprocess.run(
        ["make", "-s", "soak"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
    )
    output = finished.stdout[-3000:] + finished.stderr[-3000:]
    verdict = json.loads((out_dir / "verdict.json").read_text())
    assert finished.returncode == 0, output
    assert verdict["passed"], verdict["reasons"]
    assert verdict["failed_requests"] == 0
    assert verdict["requests"] >= 0.9 * SOAK_S * RATE_RPS
    labels = " ".join(slope["label"] for slope in verdict["slopes"])
    # Every process of the service was judged, HAProxy (as make serve runs it) included.
    assert "haproxy" in labels
    assert "ServeReplica" in labels
    assert "PASS" in finished.stdout
