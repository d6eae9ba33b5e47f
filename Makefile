# The two commands in the README: `make demo` and `make test`.
# Every install is pinned by constraints.txt (pip, the build backend, each
# dependency): a run installs what passed before. `make test-latest` runs the
# suite on the newest releases instead, in a venv of its own; `make constraints`
# rewrites the pins from a fresh venv. pyproject.toml keeps its ranges.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PINS := constraints.txt
PIN := --constraint $(PINS) --build-constraint $(PINS)
STAMP_PIP := $(VENV)/.installed-pip
STAMP_BASE := $(VENV)/.installed-base
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench
LATEST := .venv-latest
PINVENV := .venv-pin
# Passed on to pytest, e.g. make test PYTEST_ARGS="tests/test_map.py -x"
PYTEST_ARGS ?=
# make conformance: the standards' own test suites (CPython's test_concurrent_futures,
# ...) against manycore's facades, under a Python that ships them (3.13; the
# interpreter of make test does not). PY313: that interpreter, by default the newest
# pyenv 3.13 (pyenv's python3.13 shim refuses to run unless 3.13 is selected), else
# python3.13 on PATH. CONFORMANCE_REQUIRED=1 (CI): a missing interpreter or test
# package fails instead of skipping.
PYENV_ROOT ?= $(HOME)/.pyenv
PY313 ?= $(firstword $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.13*/bin/python3))) \
	$(shell command -v python3.13 2>/dev/null))
CONFORMANCE_REQUIRED ?=
CONFORMANCE := .venv-conformance
STAMP_CONFORMANCE := $(CONFORMANCE)/.installed

.PHONY: demo test test-slow test-clusters test-latest conformance constraints lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The pinned pip first: --build-constraint needs pip 25.3 or newer.
$(STAMP_PIP): $(PINS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --constraint $(PINS) --upgrade pip
	touch $@

$(STAMP_BASE): pyproject.toml $(STAMP_PIP)
	$(BIN)/python -m pip install --quiet $(PIN) -e .
	touch $@

$(STAMP_TEST): pyproject.toml $(STAMP_PIP)
	$(BIN)/python -m pip install --quiet $(PIN) -e '.[test]'
	touch $@ $(STAMP_BASE)

$(STAMP_BENCH): pyproject.toml $(STAMP_PIP)
	$(BIN)/python -m pip install --quiet $(PIN) -e '.[bench]'
	touch $@

demo: $(STAMP_BASE)
	$(BIN)/manycore demo

# make test stays under 5 minutes on 2 cores: the longer adversarial cases
# (marked slow) run in make test-slow, which CI runs as well.
test: $(STAMP_TEST)
	$(BIN)/python -m pytest -m "not slow and not services" $(PYTEST_ARGS)

test-slow: $(STAMP_TEST)
	$(BIN)/python -m pytest -m "slow and not services" $(PYTEST_ARGS)

# manycore against engines started as separate services (tests/clusters): each
# suite starts its own on 127.0.0.1 and stops it; CI (CI=true) fails where an
# engine is missing instead of skipping.
# Its own venv, so that make test never depends on whether an engine (ray, ...)
# happens to be installed.
CLUSTERS := .venv-clusters
STAMP_CLUSTERS := $(CLUSTERS)/.installed

$(STAMP_CLUSTERS): pyproject.toml $(PINS)
	test -x $(CLUSTERS)/bin/python || $(PYTHON) -m venv $(CLUSTERS)
	$(CLUSTERS)/bin/python -m pip install --quiet --constraint $(PINS) --upgrade pip
	$(CLUSTERS)/bin/python -m pip install --quiet $(PIN) -e '.[test,ray,mpi,celery,ipyparallel,spark]'
	touch $@

test-clusters: $(STAMP_CLUSTERS)
	$(CLUSTERS)/bin/python -m pytest -m services tests/clusters $(PYTEST_ARGS)

# The suite on the newest release of every dependency (no constraints, upgraded
# on every run): a new release that breaks manycore shows here first.
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
	$(LATEST)/bin/python .ci/constraints.py newer $(PINS)
	$(LATEST)/bin/python -m pytest -m "not services" $(PYTEST_ARGS)

# Every tests/conformance/*_suite.py (tests/conformance/run.py runs them; a new
# suite is one more file there). A suite needing more packages adds them to the
# install below: futures and mp_pool need only manycore's own dependencies,
# joblib_suite needs pytest and joblib (the test extra) and scikit-learn (the
# conformance extra), all pinned by constraints.txt.
conformance:
	@if [ -z "$(PY313)" ] || ! "$(PY313)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then \
		echo "SKIP make conformance: no Python 3.13 found (set PY313=/path/to/python3.13)"; \
		exit $(if $(CONFORMANCE_REQUIRED),1,0); \
	fi; \
	$(MAKE) --no-print-directory $(STAMP_CONFORMANCE) && \
	$(CONFORMANCE)/bin/python tests/conformance/run.py $(if $(CONFORMANCE_REQUIRED),--required)

$(STAMP_CONFORMANCE): pyproject.toml $(PINS)
	test -x $(CONFORMANCE)/bin/python || "$(PY313)" -m venv $(CONFORMANCE)
	$(CONFORMANCE)/bin/python -m pip install --quiet --constraint $(PINS) --upgrade pip
	$(CONFORMANCE)/bin/python -m pip install --quiet $(PIN) -e '.[test,conformance]'
	touch $@

# Rewrite constraints.txt with what resolves today, from a fresh venv: every extra
# that a make target installs (conformance included: its venv is pinned here too).
constraints:
	rm -rf $(PINVENV)
	$(PYTHON) -m venv $(PINVENV)
	$(PINVENV)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(PINVENV)/bin/python -m pip install --quiet -e '.[test,bench,dev,conformance,ray,mpi]'
	$(PINVENV)/bin/python .ci/constraints.py write > $(PINS).new
	mv $(PINS).new $(PINS)
	rm -rf $(PINVENV)

lint: $(STAMP_TEST)
	$(BIN)/python -m pip install --quiet $(PIN) ruff mypy
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m mypy

bench: $(STAMP_BENCH)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(LATEST) $(PINVENV) $(CONFORMANCE) $(CLUSTERS) build src/*.egg-info .pytest_cache
