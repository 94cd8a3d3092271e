# The README's two commands: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
ENVCTL := $(BIN)/envctl

.PHONY: setup engine demo test test-unit check lint typecheck format proto bench bench-full bench-smoke fuzz fuzz-smoke clean

setup:
	@scripts/setup.sh

engine: setup

demo: setup
	$(ENVCTL) daemon status
	$(ENVCTL) build environments/default
	$(ENVCTL) enter environments/default -- python -c "import sys, numpy; print('python', sys.version.split()[0], 'numpy', numpy.__version__)"
	$(ENVCTL) fingerprint environments/default

# Two pytest-xdist workers: integration tests mostly wait on the engine and the network. Each
# test module runs whole on one worker, the ones that start engines of their own all on one
# (tests/conftest.py's scheduler). `make test PYTEST_WORKERS=` runs in one process.
# ENVD_TEST_ENGINES=default skips the engine matrix's other engines (Docker 26, Podman), with
# the reason, to time the default engine alone; `make test` without it runs every engine.
PYTEST_WORKERS ?= -n 2 --dist loadfile

test: setup
	$(BIN)/python -m pytest $(PYTEST_WORKERS)

test-unit: setup
	$(BIN)/python -m pytest -m "not integration"

lint: setup
	$(BIN)/ruff check envd cli tests bench scripts
	$(BIN)/lint-imports
	$(BIN)/ruff format --check envd cli tests bench scripts

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test bench-smoke fuzz-smoke  # what CI runs (.ci/run)

format: setup
	$(BIN)/ruff check --fix envd cli tests bench scripts
	$(BIN)/ruff format envd cli tests bench scripts

proto: setup
	$(BIN)/python scripts/gen_proto.py

bench: setup
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install -q matplotlib
	$(BIN)/python -m bench

bench-smoke: setup  # every bench case once on the small template, no report: bench cannot rot
	$(BIN)/python -m bench --smoke

bench-full: setup
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install -q matplotlib
	$(BIN)/python -m bench --full

FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 15

fuzz: setup  # every tests/fuzz/fuzz_*.py target for FUZZ_SECONDS each (atheris); crashes in tests/fuzz/crashes/
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

fuzz-smoke: setup  # a short run of every fuzz target: the targets cannot rot
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SMOKE_SECONDS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
