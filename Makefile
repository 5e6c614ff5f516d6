# Two commands on a fresh machine: `make run` and `make test`. `make setup` is the idempotent part of both.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The first interpreter >= 3.12 we can find; override with `make PYTHON=/path/to/python3.13 ...`.
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	  && { echo $$p; break; }; done)
PYTEST_ARGS ?=

.PHONY: setup run test lint typecheck check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@if [ -z "$(PYTHON)" ]; then echo "make: no Python >= 3.12 found (set PYTHON=/path/to/python3.12+)" >&2; exit 1; fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

run: setup
	$(VENV)/bin/aileron service

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy .

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
