# berrylive: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest clean bench console

CONSOLE := control/console/node_modules/.package-lock.json

$(CONSOLE): control/console/package-lock.json
	cd control/console && npm ci --no-audit --no-fund || echo "console: npm ci failed; preview player and comments disabled"

console: $(CONSOLE)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) $(CONSOLE)
	$(PY) -m control.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy media ingest relay replay danmaku shop_bridge control core

pytest: $(STAMP) $(CONSOLE)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
