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
NODE_DIR := clients/typescript
HAVE_NODE := $(shell command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && echo yes)
NODE_STAMP := $(NODE_DIR)/node_modules/.ci-stamp

.PHONY: help install node-deps run test lint gen gen-check bench clean

help:
	@echo "make run    - start the service on the embedded defaults (development mode)"
	@echo "make test   - run the whole test suite"
	@echo "make lint   - ruff, mypy, yamllint, buf lint and tsc --strict"
	@echo "make bench  - benchmark; prints a table and writes bench/results/latest.json"
	@echo "make gen    - regenerate service/gen, the Python client's and the TypeScript client's gen from protos/"

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,embedded,otel]' -e clients/python
	@touch $@

install: $(STAMP)

# The TypeScript client's packages, installed from its committed lockfile.
$(NODE_STAMP): $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --silent >/dev/null
	@touch $@

node-deps: $(NODE_STAMP)

run: install
	$(PY) -m service

# The TypeScript client (clients/typescript, tests/typescript) is built and tested when Node.js and
# npm are present; without them it is left out, loudly, since the service itself needs no Node.
test: install gen-check
	@if [ -n "$(HAVE_NODE)" ]; then \
		$(MAKE) --no-print-directory node-deps && \
		$(PY) -m pytest -q -p no:cacheprovider; \
	else \
		echo "node/npm not found: the TypeScript client (tests/typescript) is not tested"; \
		$(PY) -m pytest -q -p no:cacheprovider --ignore=tests/typescript; \
	fi

gen: install
	$(PY) tools/genproto.py
	@if [ -n "$(HAVE_NODE)" ]; then $(MAKE) --no-print-directory node-deps && cd $(NODE_DIR) && node scripts/gen.mjs; \
	else echo "node/npm not found: clients/typescript/src/gen is not regenerated"; fi

gen-check: install
	$(PY) tools/genproto.py --check
	@if [ -n "$(HAVE_NODE)" ]; then $(MAKE) --no-print-directory node-deps && cd $(NODE_DIR) && node scripts/gen.mjs --check; \
	else echo "node/npm not found: clients/typescript/src/gen is not checked"; fi

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m yamllint --strict docker-compose.yml deploy/ .yamllint
	$(PY) -m mypy
	$(MAKE) --no-print-directory node-deps
	$(NODE_DIR)/node_modules/.bin/buf lint protos
	$(NODE_DIR)/node_modules/.bin/tsc --noEmit --strict -p $(NODE_DIR)

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .secrets-data $(NODE_DIR)/node_modules $(NODE_DIR)/dist
