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

.PHONY: demo test test-slow test-clusters test-latest constraints lint bench clean

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
test-clusters: $(STAMP_TEST)
	$(BIN)/python -m pip install --quiet $(PIN) -e '.[ray]'
	$(BIN)/python -m pytest -m services tests/clusters $(PYTEST_ARGS)

# The suite on the newest release of every dependency (no constraints, upgraded
# on every run): a new release that breaks manycore shows here first.
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
	$(LATEST)/bin/python .ci/constraints.py newer $(PINS)
	$(LATEST)/bin/python -m pytest -m "not services" $(PYTEST_ARGS)

# Rewrite constraints.txt with what resolves today, from a fresh venv.
constraints:
	rm -rf $(PINVENV)
	$(PYTHON) -m venv $(PINVENV)
	$(PINVENV)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(PINVENV)/bin/python -m pip install --quiet -e '.[test,bench,dev,ray]'
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
	rm -rf $(VENV) $(LATEST) $(PINVENV) build src/*.egg-info .pytest_cache
