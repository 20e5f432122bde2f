# Model Gateway: `make run` and `make test` do everything on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROTOS  := $(wildcard protos/modelgateway/v1/*.proto)
STUBS   := modelgateway/v1/model_gateway_pb2.py
TOOLS   := $(VENV)/.tools-stamp
STAMP   := $(VENV)/.install-stamp
CONFIG  ?= config/gateway.yaml
PYTEST_ARGS ?=

.PHONY: setup stubs run test demo lint bench bench-peers clean node-deps contract-baseline codegen-deps

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

test: setup node-deps codegen-deps
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m gateway_server.demo

clean:
	rm -rf $(VENV) modelgateway build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Contract and code checks: buf lint + breaking, mypy, ruff (scripts/lint.sh).
lint: setup
	bash scripts/lint.sh

# After a deliberate contract change: refresh the buf breaking-change baseline (commit it with the .proto).
contract-baseline: setup
	bash scripts/lint.sh --update-baseline

# Debian's gRPC plugins for C++ and Java, for the service-stub generation checks (root + apt only).
codegen-deps:
	bash scripts/codegen_deps.sh

# npm dependencies of the Node.js example (skipped with a message where npm is absent).
node-deps:
	bash scripts/node_deps.sh

# Latency and throughput of the gateway against a fake upstream (bench/), printed as a table.
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.streams $(STREAMS_ARGS)

# Opt-in (not in `make test`): this gateway beside the Portkey gateway (npm, into bench/portkey/node_modules)
# and the bare grpc.aio floor, pinned to one core, one interleaved run (bench/peers.py).
bench-peers: setup
	bash scripts/node_deps.sh bench/portkey
	$(BIN)/python -m bench.peers $(PEERS_ARGS)
