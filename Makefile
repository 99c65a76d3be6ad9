# The README's first two commands: `make demo` and `make test`. Each builds the venv itself.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-cloud test lint typecheck unit venv clean bench

# setup.py and the C source: `pip install -e` builds the compiled row path in place
$(STAMP): pyproject.toml devtools/pyproject.toml constraints.txt setup.py klinelake/core/_rest_page.c
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]' -e ./devtools
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

demo-cloud: $(STAMP)
	$(PY) scripts/demo.py --cloud

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy klinelake
	$(PY) -m mypy streamer backfill ingest_function devtools/binance_sim devtools/localcloud

test: lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(PY) -m pytest -q -m "not stack and not slow"

clean:
	rm -rf $(VENV) .stack .demo lake state .mypy_cache .ruff_cache .pytest_cache

# --- local cloud stack ---
# `make stack-up` starts fake-gcs-server, the Pub/Sub emulator and the ingest function in the
# background (state, logs and data in .stack/); `make stack-down` stops what it started.
STACK_DIR ?= .stack
.PHONY: stack-up stack-down
stack-up: $(STAMP)
	$(PY) -m localcloud up --dir $(STACK_DIR) > /dev/null
	@echo "local stack running; in your shell run:  source $(STACK_DIR)/env"

stack-down:
	$(PY) -m localcloud down --dir $(STACK_DIR)
