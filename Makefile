# Hapax developer tasks. `make test` sets everything up from nothing (Python venv, the npm test
# tools, the Debian prometheus package) and runs the whole suite; `.ci/run` is just that.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := tools
NODE_BIN := $(CURDIR)/$(TOOLS)/node_modules/.bin

# Stamp files: a step reruns only when its inputs are newer than its stamp (or the stamp is gone).
VENV_STAMP  := $(VENV)/.installed
TOOLS_STAMP := $(TOOLS)/node_modules/.installed

# Extra arguments for pytest, e.g. `make test PYTEST_ARGS='-k grpcurl -x'`.
PYTEST_ARGS ?=
# A config file for `make run`; empty means $$HAPAX_CONFIG or the built-in default.
CONFIG ?=
# Where `make image` writes the OCI image layout (oci/) and its figures (image.json).
IMAGE_DIR ?= build/image

.PHONY: help venv tools node-tools system-deps run check test generate lint bench image

help:
	@echo "make venv       create .venv and install the project with its dev extras"
	@echo "make tools      install the test peers: npm tools (buf, grpc-js) and prometheus/promtool"
	@echo "make run        run the gateway (gRPC on :50051) [CONFIG=file.yaml]"
	@echo "make check      the fast loop: unit and in-process tests, no subprocess (< 1 min)"
	@echo "make test       run the whole test suite [PYTEST_ARGS=...]"
	@echo "make generate   regenerate the Python, TypeScript, Go and Java stubs from protos/"
	@echo "make lint       buf lint, ruff check, ruff format --check, mypy"
	@echo "make bench      run the benchmarks"
	@echo "make image      build the OCI image into build/image without Docker (root; mmdebstrap, umoci)"

# --- setup -------------------------------------------------------------------------------------

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -e '.[dev]'
	@touch $@

tools: node-tools system-deps

node-tools: $(TOOLS_STAMP)

# npm ci empties node_modules first, so the stamp inside it goes too and is written afresh.
$(TOOLS_STAMP): $(TOOLS)/package.json $(TOOLS)/package-lock.json
	npm ci --prefix $(TOOLS) --no-audit --no-fund
	@touch $@

# The script does nothing when promtool is already on PATH.
system-deps:
	@bash scripts/install-system-deps.sh

# --- tasks -------------------------------------------------------------------------------------

run: venv
	$(BIN)/hapaxd serve $(if $(CONFIG),--config $(CONFIG))

# The fast loop: what runs in this interpreter only. tests/conftest.py marks `external` every test
# that starts a process or needs a program (grpcurl, node, redis-server, the hapaxd CLI...);
# `slow` marks the load and soak tests. Both run in `make test`.
check: venv
	$(BIN)/pytest -m "not external and not slow" $(PYTEST_ARGS)

test: venv tools
	PATH="$(NODE_BIN):$$PATH" $(BIN)/pytest $(PYTEST_ARGS)

generate: venv tools
	$(BIN)/python scripts/generate_stubs.py

lint: venv node-tools
	$(NODE_BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m benchmarks

# The OCI image without a Docker daemon (README "Running in production"): root, with the tools
# `make tools` installs. The commit's time as SOURCE_DATE_EPOCH makes the build reproducible.
image: system-deps
	SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null)} scripts/build-image.sh $(IMAGE_DIR)
