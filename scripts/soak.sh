#!/usr/bin/env bash
# Soak (`make soak`): `serve run serve_config.yaml` on a free loopback port, its capacity
# measured (closed loop, single-text embeddings), then open-loop load at ~60% of it for
# SOAK_S seconds while the RSS of every process of the service's session (serve run, Ray's
# GCS, raylet, HAProxy, controller, every replica) is sampled; growth per process and the
# total's slope are printed and written with plots to OUT_DIR (benchmarks/results/,
# git-ignored), with the verdict in OUT_DIR/verdict.json. Exits 1 when the soak fails: a
# request not answered with 2xx, or a process still growing faster than MAX_SLOPE MiB/min in
# the later half of the run.
#
#   scripts/soak.sh                      10 minutes (SOAK_S=600)
#   SOAK_S=60 scripts/soak.sh            a one-minute smoke
#   scripts/soak.sh --overload           then the overload test with a 30 s spike
#                                        (tests/integration/test_overload.py, OVERLOAD_SPIKE_S)
#
# Environment: SOAK_S, SOAK_FRACTION (0.6), CAPACITY_S (20), SOAK_RATE (req/s; skips the
# capacity run), MAX_SLOPE (2.0), CONFIG (serve_config.yaml), OUT_DIR, PYTHON. Loads go to
# 127.0.0.1 only; processes are ended by session id, never by name.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
SOAK_S="${SOAK_S:-600}"
OUT_DIR="${OUT_DIR:-benchmarks/results/soak-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT_DIR"

status=0
"$PYTHON" - "$SOAK_S" "$OUT_DIR" "${CONFIG:-serve_config.yaml}" \
  "${SOAK_FRACTION:-0.6}" "${CAPACITY_S:-20}" "${SOAK_RATE:-}" "${MAX_SLOPE:-2.0}" <<'PY' || status=$?
import sys
from pathlib import Path

from benchmarks import soak
from benchmarks.loadgen import Bounds, ClosedLoop, Target, run_load
from benchmarks.payloads import embedding_bodies, make_texts
from benchmarks.service_process import free_port, start_serve_run, stop, wait_ready
from benchmarks.stats import summarize

soak_s, out_dir, config = float(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
fraction, capacity_s = float(sys.argv[4]), float(sys.argv[5])
fixed_rate, max_slope = sys.argv[6], sys.argv[7]
handle = start_serve_run(config, free_port(), log_path=out_dir / "serve_run.log")
try:
    wait_ready(handle.url, 600, handle)
    if fixed_rate:
        rate_rps = float(fixed_rate)
    else:
        # Distinct texts (seed 99, unlike the soak's), so the embedding cache does not flatter it.
        target = Target.from_request_set(handle.url, embedding_bodies(make_texts(20_000, 99), 1))
        record = run_load(target, ClosedLoop(32), Bounds(capacity_s + 5), progress=False)
        capacity_rps = summarize(record, 1, warmup_s=5).throughput_rps
        rate_rps = round(fraction * capacity_rps, 1)
        print(f"capacity {capacity_rps:.1f} req/s")
    print(f"soaking {soak_s:.0f} s at {rate_rps} req/s")
    warmup_s = min(30.0, soak_s / 6)
    verdict = soak.main(
        [
            "--url", handle.url,
            "--service-pid", str(handle.pid),
            "--rate-rps", str(rate_rps),
            "--duration-s", str(soak_s),
            "--warmup-s", str(warmup_s),
            "--window-s", str(min(60.0, soak_s / 6)),
            "--sample-every-s", str(min(10.0, soak_s / 12)),
            "--out", str(out_dir),
            "--max-slope-mib-per-min", max_slope,
        ]
    )
finally:
    stop(handle)
sys.exit(verdict)
PY

if [[ "${1:-}" == "--overload" ]]; then
  OVERLOAD_SPIKE_S="${OVERLOAD_SPIKE_S:-30}" "$PYTHON" -m pytest -s -q \
    tests/integration/test_overload.py 2>&1 | tee "$OUT_DIR/overload.log" || status=$?
fi
exit "$status"
