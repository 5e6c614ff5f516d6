# Two commands on a fresh machine: `make run` and `make test`. `make setup` is the idempotent part of both.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The first interpreter >= 3.12 we can find; override with `make PYTHON=/path/to/python3.13 ...`.
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	  && { echo $$p; break; }; done)
PYTEST_ARGS ?=

.PHONY: setup run test lint typecheck check clean github-spec bench

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
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy .

check: lint typecheck test

# Figures, not pass/fail: the proxy bench (needs nginx: apt-get install -y nginx-light), the approval bench
# (embedded; also on PostgreSQL + Redis when DATABASE_URL and REDIS_URL are set), the policy, vault and audit
# benches (audit: on PostgreSQL when DATABASE_URL is set),
# and the matcher bench when the GitHub description is there (`make github-spec`). BENCH_ARGS go to the proxy
# bench (e.g. BENCH_ARGS="--requests 1000 --rounds 5" or "--json").
BENCH_ARGS ?=
bench: setup
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { echo "make: the proxy bench needs nginx (apt-get install -y nginx-light)" >&2; exit 1; }
	$(PY) bench/proxy_bench.py $(BENCH_ARGS)
	$(PY) bench/approval_bench.py
	$(PY) bench/launch_bench.py
	$(PY) bench/policy_bench.py
	$(PY) bench/vault_bench.py
	$(PY) bench/audit_bench.py
	@if [ -f .cache/octokit/api.github.com.json ]; then $(PY) bench/match_bench.py; \
	  else echo "bench: match_bench skipped (run \`make github-spec\` first)"; fi

# The official GitHub REST description (npm package @octokit/openapi), for the matcher's full-spec tests and
# bench/match_bench.py. Optional: those tests skip, saying so, when it is absent.
GITHUB_SPEC_VERSION ?= 23.0.2
github-spec: .cache/octokit/api.github.com.json

.cache/octokit/api.github.com.json:
	@command -v npm >/dev/null || { echo "make: npm is needed to fetch the GitHub description" >&2; exit 1; }
	mkdir -p .cache/octokit
	cd .cache/octokit && npm pack --silent @octokit/openapi@$(GITHUB_SPEC_VERSION) >/dev/null \
	  && tar -xzf octokit-openapi-$(GITHUB_SPEC_VERSION).tgz package/generated/api.github.com.json \
	  && mv package/generated/api.github.com.json . && rm -rf package octokit-openapi-$(GITHUB_SPEC_VERSION).tgz

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
