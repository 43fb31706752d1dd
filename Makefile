# bind — two commands do all set-up on a fresh machine:
#   make demo   set up .venv (pinned torch stack) and run the end-to-end demo
#   make test   set up .venv and run the whole test suite (unit + integration + distributed)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser demo test test-fast lint bench clean

$(STAMP): pyproject.toml setup.py constraints.txt examples/pointcloud_plugin/pyproject.toml examples/world/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation:UserWarning" $(BIN)/python -m pip install -q -c constraints.txt \
	  -e ".[dev]" -e examples/pointcloud_plugin -e examples/world
	touch $(STAMP)

setup: $(STAMP) browser

# Debian's chromium + chromedriver for the web page's headless-browser test (tests/integration/test_serve_browser.py)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver \
	  || echo "warning: could not install chromium; the headless-browser test will be skipped (CI fails it)"; }

demo: $(STAMP)
	$(BIN)/bindspace demo --out runs/demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout 900 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x -m "not slow and not integration and not distributed" tests

lint: $(STAMP)
	$(BIN)/ruff check bind modalities tests examples setup.py
	$(BIN)/ruff format --check bind modalities tests examples setup.py

bench: $(STAMP)
	$(BIN)/bindspace bench encoders --model bind-base --modality image --batch 32 --json runs/bench/encoders.json

clean:
	rm -rf runs .pytest_cache
