# Two entry points for a fresh machine (Python 3.11 + make): `make serve` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test lint install-serve install-dev dist clean soak audit bench bench-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Serving needs no torch: FastAPI + ONNX Runtime (CPU build) only.
$(VENV)/.serve-installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[serve,cpu]"
	touch $@

# Everything the test suite needs on a CPU machine (torch is pinned to the CPU build in pyproject).
$(VENV)/.dev-installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.serve-installed

install-serve: $(VENV)/.serve-installed
install-dev: $(VENV)/.dev-installed

serve: install-serve
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite, tests/test_wheel.py included: it builds the sdist and the wheel, installs the wheel
# into a fresh virtualenv (pip fetches its dependencies) and serves from it.
test: lint
	$(BIN)/python -m pytest

# What ships: dist/ganserve-<version>.tar.gz and the wheel (default models inside), checked by twine.
dist: install-dev
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# Benchmarks (not part of the test suite): ~15 min, writes docs/BENCHMARKS.md and docs/bench/.
bench: install-dev
	$(BIN)/python -m bench all

bench-quick: install-dev
	$(BIN)/python -m bench all --quick

# Reliability, long run (docs/RELIABILITY.md): 5 min soak + overload + SIGTERM drain against a real
# server, then schemathesis with 500 examples per operation and mode (thousands of cases).
soak: install-dev
	$(BIN)/python -m bench.soak --duration 300
	GANSERVE_FUZZ_EXAMPLES=500 $(BIN)/python -m pytest tests/test_reliability_fuzz.py -p no:cacheprovider

# Dependency audit (needs network to PyPI / OSV).
audit: install-dev
	$(BIN)/pip-audit

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist
