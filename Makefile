# One obvious way to do each thing. `make run` and `make test` work on a fresh machine with only
# Python 3.11+: they create .venv and install what they need first.
SHELL := /bin/bash
# The first Python 3.11+ on PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
NODE_DIR := clients/node

.PHONY: help install run test lint gen gen-check bench clean

help:
	@echo "make run    - start the service on the embedded defaults (development mode)"
	@echo "make test   - run the whole test suite"
	@echo "make lint   - ruff, mypy and buf lint"
	@echo "make bench  - benchmark; prints a table and writes bench/results/latest.json"
	@echo "make gen    - regenerate service/gen from protos/"

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,embedded]' -e clients/python
	@touch $@

install: $(STAMP)

run: install
	$(PY) -m service

# The Node example client (tests/node) runs when Node.js and npm are present; without them it is
# left out, loudly, since the service itself needs no Node.
test: install gen-check
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		(cd $(NODE_DIR) && npm ci --no-audit --no-fund --silent >/dev/null) && \
		$(PY) -m pytest -q -p no:cacheprovider; \
	else \
		echo "node/npm not found: the Node client example (tests/node) is not run"; \
		$(PY) -m pytest -q -p no:cacheprovider --ignore=tests/node; \
	fi

gen: install
	$(PY) tools/genproto.py

gen-check: install
	$(PY) tools/genproto.py --check

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --silent >/dev/null
	$(NODE_DIR)/node_modules/.bin/buf lint protos

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .secrets-data $(NODE_DIR)/node_modules
