SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install serve test test-unit test-integration test-e2e lint bench bench-lengths bench-generation bench-autoscaling soak clean

# torch first and pinned: the CPU wheel on local disk; anything else pulls gigabytes.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The fast path: HAProxy in front of the ingress replicas instead of Serve's Python proxy,
# gRPC between replicas. Under load the raylet made every Ray process on the node run a full
# gc.collect() at the same moment, every 10 s (its minimum interval): a burst that stalled the
# forward passes; 600 s keeps it rare. FORWARDED_ALLOW_IPS empty: uvicorn (in Serve's proxy and
# the replicas) believes no client's X-Forwarded-For; gateway.trusted_proxies decides instead.
# RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1: the throughput preset holds a replica's log lines
# until 1000 have gathered or one is an ERROR, so a warning (a replica died under a call, a
# retry) could wait for hours; access logs are off, so writing each line costs nothing.
# Set the same variables on `ray start` for `serve deploy`.
SERVE_ENV := RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_HA_PROXY=1 RAY_local_gc_min_interval_s=600 FORWARDED_ALLOW_IPS= RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1
# HAProxy started through serve-inference-haproxy, which tells the ingress each client's address.
HAPROXY_ENV := RAY_SERVE_HAPROXY_BINARY_PATH=$(CURDIR)/$(BIN)/serve-inference-haproxy
SERVE_CONFIG ?= serve_config.yaml

serve: install
	@$(BIN)/python scripts/check_port.py $(SERVE_CONFIG)
	@$(BIN)/python -m serve_app.objective $(SERVE_CONFIG)
	$(SERVE_ENV) $(HAPROXY_ENV) $(BIN)/serve run $(SERVE_CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The integration tier runs behind HAProxy, as `make serve` does; the protections run a second
# time behind Serve's Python proxy, the other way a cluster can front the service: keys, limits,
# deadlines, bodies, overload, and of the fault tests the one where the proxy matters (an ingress
# replica dying under load). Draining and the hostile-input fuzz run behind HAProxy only: behind
# the Python proxy, draining is Serve's own handle path, and past the proxy the fuzz reaches the
# same ingress code; running each twice cost over two minutes of the suite's 20.
PROXY_TESTS := $(addprefix tests/integration/,test_gateway_service.py test_overload.py \
	test_faults.py::test_a_killed_ingress_replica_fails_only_its_requests)

test: install lint
	$(BIN)/python -m pytest --durations=25 tests
	SERVE_TEST_PROXY=python $(BIN)/python -m pytest --durations=10 $(PROXY_TESTS)

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install
	$(BIN)/python -m pytest tests/integration

test-e2e: install
	$(BIN)/python -m pytest tests/e2e

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

bench: install
	$(SERVE_ENV) $(HAPROXY_ENV) $(BIN)/python -m benchmarks.standard $(BENCH_ARGS)

# Queries and passages mixed: passes grouped by length against one padded pass per batch.
bench-lengths: install
	$(SERVE_ENV) $(HAPROXY_ENV) $(BIN)/python -m benchmarks.lengths $(BENCH_ARGS)

bench-generation: install
	$(SERVE_ENV) $(HAPROXY_ENV) $(BIN)/python -m benchmarks.generation_batching $(BENCH_ARGS)

# The simulator's spike and on/off traces replayed on Ray with our policy and Ray's default,
# beside the simulator's predictions (~10 minutes; BENCH_ARGS="--out DIR").
bench-autoscaling: install
	$(SERVE_ENV) $(BIN)/python -m benchmarks.autoscaling_replay $(or $(BENCH_ARGS),--out benchmarks/results/autoscaling_replay)

# By hand, not CI: 10 minutes at 60% of capacity, memory of every service process sampled
# (SOAK_S=60 for a smoke; SOAK_ARGS=--overload adds the overload test).
soak: install
	$(SERVE_ENV) $(HAPROXY_ENV) scripts/soak.sh $(SOAK_ARGS)
