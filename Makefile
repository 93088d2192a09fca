# failsight: `make demo` and `make test` do all their own set-up on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps demo test lint unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

# Debian packages the tests start for real: PostgreSQL, Prometheus, Alertmanager, dnsmasq...
system-deps:
	scripts/system-deps.sh

demo: setup
	@scripts/system-deps.sh --optional
	$(BIN)/failsight demo $(ARGS)

lint: setup
	$(BIN)/ruff check failsight agent probes tests bench
	$(BIN)/ruff format --check failsight agent probes tests bench
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests

test: setup system-deps lint
	$(BIN)/pytest -q tests

bench: setup system-deps
	$(BIN)/pip install --quiet -e '.[test,fast,bench]'
	$(BIN)/python -m bench.run_all $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
