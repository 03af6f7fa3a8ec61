# personaflow — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST := $(BIN)/python -m pytest

.PHONY: run test lint wire-stub chaos bench install install-test browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-install only when the project metadata changes (idempotent, fast reruns).
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test browser

## Debian's chromium, for the dashboard's browser test (installed once if missing).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the dashboard test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

## Start an embedded broker and a worker, run the demo scenario, print receipts/DLQ/status, stop.
run: install
	$(BIN)/personaflow demo

## Static checks: lint, format, types, import layers.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy streams engine tables
	$(BIN)/mypy streams/wire.py  # the module behind its stub streams/wire.pyi (which the line above reads)
	$(BIN)/lint-imports

## Write streams/wire.pyi, the fast twins' type stub, from the contract models (after changing streams/records.py).
wire-stub: $(VENV)/.installed-test
	$(BIN)/python -m streams.wirestub --write

## Static checks, then unit tests, broker-level tests and the short crash test (one broker, one worker per session).
test: lint
	$(PYTEST) -q -m "not chaos and not bench"

## Long crash/restart suite.
chaos: install-test
	$(PYTEST) -q -m chaos

## Benchmarks (about ten minutes): bench/results.json and docs/BENCHMARKS.md.
bench: install-test
	$(PYTEST) -q -m bench -s -p no:cacheprovider

clean:
	rm -rf $(VENV) .personaflow .pytest_cache .mypy_cache *.egg-info
