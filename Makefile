# Model Gateway: `make run` and `make test` do everything on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROTOS  := $(wildcard protos/modelgateway/v1/*.proto)
STUBS   := modelgateway/v1/model_gateway_pb2.py
TOOLS   := $(VENV)/.tools-stamp
STAMP   := $(VENV)/.install-stamp
# GATEWAY_CONFIG=path make run uses that file (CONFIG=path too).
CONFIG  ?= $(or $(GATEWAY_CONFIG),config/gateway.yaml)
PYTEST_ARGS ?=
# make test's pytest-xdist workers: 3 on 2 cores, as most test time waits on timeouts and other
# processes (PYTEST_WORKERS=0: one process, no xdist).
PYTEST_WORKERS ?= 3

.PHONY: setup stubs run test demo lint bench soak clean node-deps contract-baseline codegen-deps codegen-check \
	bench-deps bench-serving image deploy-check deploy-checkov test-deps bench-peers

setup: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Code generators first: the package's stubs must exist before it is installed.
$(TOOLS): | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check 'grpcio-tools>=1.66,<2' 'mypy-protobuf>=3.6'
	touch $@

stubs: $(STUBS)

# Python stubs (+ .pyi) into the importable package `modelgateway`, shared by server and client.
$(STUBS): $(PROTOS) $(TOOLS)
	rm -rf modelgateway
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. \
		--mypy_out=. --mypy_grpc_out=. $(PROTOS)
	touch modelgateway/__init__.py modelgateway/v1/__init__.py modelgateway/py.typed

$(STAMP): pyproject.toml $(STUBS)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

run: setup
	$(BIN)/python -m gateway_server --config $(CONFIG)

test: setup node-deps test-deps
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Opt-in, not part of `make test`: the contract's code generation for Java, Kotlin, C#, C++,
# Objective-C, PHP and Ruby (tests/contract/test_codegen.py), with Debian's gRPC plugins for the
# C++/Java service stubs (codegen-deps: installed only as root with apt-get, else those tests skip).
codegen-check: setup codegen-deps
	CODEGEN_CHECK=1 $(BIN)/python -m pytest tests/contract/test_codegen.py $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m gateway_server.demo

clean:
	rm -rf $(VENV) .venv-checkov modelgateway build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Contract and code checks: buf lint + breaking, mypy, ruff (scripts/lint.sh).
lint: setup
	bash scripts/lint.sh

# After a deliberate contract change: refresh the buf breaking-change baseline (commit it with the .proto).
contract-baseline: setup
	bash scripts/lint.sh --update-baseline

# Debian's gRPC plugins for C++ and Java, for `make codegen-check`'s service-stub checks (root + apt only).
codegen-deps:
	bash scripts/codegen_deps.sh

# Debian's redis-server for the shared rate-limit tests (root + apt only; installed when missing).
test-deps:
	bash scripts/test_deps.sh

# npm dependencies of the Node.js example (skipped with a message where npm is absent).
node-deps:
	bash scripts/node_deps.sh

# Fallback under faults: 16 callers for 60 s against the emulators (tests/soak.py; SOAK_ARGS="--duration 10").
soak: setup
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python -m tests.soak $(SOAK_ARGS)

# Latency and throughput of the gateway against a fake upstream (bench/), printed as a table.
# Then the per-call CPU of metrics, traces and JSON logs next to the plain figure (bench/observability.py),
# and the rate limiter's cost per call, memory and Redis backends (bench/limiter.py).
bench: setup test-deps
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.streams $(STREAMS_ARGS)
	$(BIN)/python -m bench.summary
	$(BIN)/python -m bench.observability $(BENCH_OBS_ARGS)
	$(BIN)/python -m bench.limiter
	$(MAKE) --no-print-directory bench-serving

# Serving (bench/serving.py): calls/s with 1 and 2 workers (h2load), admitted-call latency at 4x the
# load-shedding cap. SERVING_BENCH_ARGS=--quick for a smoke run.
bench-serving: setup bench-deps
	$(BIN)/python -m bench.serving $(SERVING_BENCH_ARGS)

# h2load (Debian nghttp2-client) for bench-serving (root + apt only; skipped with a message elsewhere).
bench-deps:
	bash scripts/bench_deps.sh

# Container image: hadolint, then build + smoke test where a Docker daemon answers (else skipped, said so).
image: setup
	bash scripts/image.sh

# Deployment checks: kustomize render + Kubernetes schema + hadolint (fast; make test runs them too).
deploy-check: setup
	bash scripts/deploy_check.sh

# The same plus checkov (opt-in, slow: installs checkov into .venv-checkov on first use).
deploy-checkov: setup
	bash scripts/deploy_check.sh --checkov

# Opt-in (not in `make test`): this gateway beside the Portkey gateway (npm, into bench/portkey/node_modules)
# and the bare grpc.aio floor, pinned to one core, one interleaved run (bench/peers.py).
bench-peers: setup
	bash scripts/node_deps.sh bench/portkey
	$(BIN)/python -m bench.peers $(PEERS_ARGS)
