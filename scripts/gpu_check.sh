#!/usr/bin/env bash
# GPU check, for a session whose machine has a CUDA GPU. Downloads nothing.
#
#   scripts/gpu_check.sh [OUT_DIR]        (default: $OUT, else ./gpu_check_out)
#
# Python: .venv's, else python3 (PYTHON to choose). Where that Python lacks Ray and the service's
# other packages, carry the parts that scripts/gpu_stage.sh packs (.gpu_stage/partN): the first
# run here installs them into .gpu_site (see docs/models.md, "The GPU check").
#
# SKIP_MODELS=1, SKIP_BENCH=1, SKIP_SERVE=1, SKIP_GENERATION=1 leave out steps 1-2, 3, 4 and 5,
# to split the check over several calls when one has a time limit.
#
# 1. scripts/gpu_check.py: every task (embedding, generation, classification) in fp16, int8 and
#    nf4 on CUDA; quantization agreement against fp16 and throughput -> OUT_DIR/gpu_check.json.
# 2. benchmarks.lengths in process on CUDA: mixed queries and passages, one fp16 pass per batch
#    against passes grouped by length at several pass costs (what `length_grouping: N` to give
#    on a GPU, where `auto` keeps one pass) -> OUT_DIR/lengths_gpu.json.
# 3. benchmarks.standard on serve_config.gpu.yaml plus a generation model (unless SKIP_BENCH=1):
#    the embedding and generation ceilings in float16 on the GPU, then the service under load
#    (10 s runs), every figure a ratio to its ceiling -> OUT_DIR/bench/ (summary.json,
#    ceiling.json, generation_ceiling.json, serve_run.log) and OUT_DIR/bench.log.
# 4. serve_config.gpu.yaml ($SERVE_CONFIG to try another) under `serve run` (unless SKIP_SERVE=1):
#    replicas sharing the GPU by fractional num_gpus must all report a CUDA device
#    -> OUT_DIR/models.json, embedding_<model>.json (one answer per embedding model), serve_run.log.
# 5. benchmarks.generation_batching on the GPU (unless SKIP_GENERATION=1): continuous against
#    static batching, a random GPT-2 of 12 layers x 768 (or $GENERATION_PATH), greedy completions
#    of 8-64 tokens from 8 and 32 clients, 10 s runs -> OUT_DIR/generation_batching/.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Packages carried as wheels (scripts/gpu_stage.sh; one part per call to the GPU machine) are
# unpacked once into .gpu_site, where later calls find them: pip --target, nothing system-wide.
if [[ -d .gpu_stage ]] && ! "$PYTHON" -c "import ray" 2> /dev/null; then
  if [[ ! -d .gpu_site/ray ]]; then
    wheels=$(mktemp -d)
    "$PYTHON" scripts/gpu_stage.py unpack --stage .gpu_stage --dest "$wheels"
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
      --target .gpu_site "$wheels"/*.whl
    rm -rf "$wheels"
  fi
  export PYTHONPATH="$PWD/.gpu_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Ray as `make serve` starts it (the Makefile's SERVE_ENV).
export RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_HA_PROXY=1 RAY_local_gc_min_interval_s=600 FORWARDED_ALLOW_IPS= RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1

nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || echo "nvidia-smi unavailable" >&2
status=0
if [[ "${SKIP_MODELS:-0}" != 1 ]]; then
  "$PYTHON" scripts/gpu_check.py --out "$OUT_DIR" || status=$?
  "$PYTHON" -m benchmarks.lengths --in-process-only --device cuda --in-process-s 5 \
    --overheads 256 1024 4096 16384 --json-out "$OUT_DIR/lengths_gpu.json" || status=$?
fi

if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
  # serve_config.gpu.yaml plus a generation model on a quarter of the GPU ($GENERATION_PATH, else
  # a tiny random GPT-2: then the completions ratio is the service's overhead around generate).
  bench_config=$("$PYTHON" scripts/bench_config.py --base serve_config.gpu.yaml \
    --out "$OUT_DIR/bench_model" --num-gpus 0.25 \
    ${GENERATION_PATH:+--generation-path "$GENERATION_PATH"} | tail -n 1)
  "$PYTHON" -m benchmarks.standard --config "$bench_config" --ceiling-device cuda \
    --completions-model bench-generator --duration-s 10 --warmup-s 2 --sweep 0.5 0.7 \
    --concurrency 1 32 128 --multi-concurrency 1 4 --completions-concurrency 8 \
    --ceiling-duration-s 5 --no-progress --out "$OUT_DIR/bench" > "$OUT_DIR/bench.log" 2>&1 \
    || status=$?
fi

if [[ "${SKIP_SERVE:-0}" != 1 ]]; then
  # Started, awaited and stopped as the benchmarks do it (benchmarks/service_process.py: its own
  # session, SIGINT restored, `--address local`); HTTP through urllib, as the image may lack curl.
  "$PYTHON" - "${SERVE_CONFIG:-serve_config.gpu.yaml}" "${PORT:-8000}" "$OUT_DIR" <<'PY' \
    || status=1
import json, sys, urllib.request
from pathlib import Path

from benchmarks.service_process import ServiceStartError, start_serve_run, stop, wait_ready

config, port, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
service = start_serve_run(config, port, log_path=out / "serve_run.log")


def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(service.url + path, data, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


try:
    wait_ready(service.url, 300, service)  # Ray, the proxy and every replica
    listed = call("/v1/models")
    (out / "models.json").write_text(json.dumps(listed, indent=1))
    models = [m for m in listed["data"] if "device" in m]
    for model in models:
        if model.get("task") == "embedding":
            answer = call("/v1/embeddings", {"model": model["id"], "input": ["hello from the gpu"]})
            (out / f"embedding_{model['id']}.json").write_text(json.dumps(answer))
except ServiceStartError as error:
    sys.exit(f"{config} did not come up: {error}")
finally:
    stop(service)
bad = [m["id"] for m in models if not m["device"].startswith("cuda")]
print({m["id"]: (m["device"], m["dtype"], m["quantization"], m["memory_bytes"]) for m in models})
sys.exit(f"not on the GPU: {bad}" if bad or not models else 0)
PY
fi

if [[ "${SKIP_GENERATION:-0}" != 1 ]]; then
  "$PYTHON" -m benchmarks.generation_batching --num-gpus 0.25 --num-cpus 1 --layers 12 \
    --width 768 --duration-s 10 ${GENERATION_PATH:+--generation-path "$GENERATION_PATH"} \
    --out "$OUT_DIR/generation_batching" > "$OUT_DIR/generation_batching.log" 2>&1 || status=$?
fi
exit "$status"
