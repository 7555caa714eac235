# One-command set-up: `make demo` runs the main job, `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BASE_STAMP := $(VENV)/.installed-base
STAMP := $(VENV)/.installed
# Exact pin: any range may resolve to a multi-GB CUDA build. Where pip's configured indexes
# serve the CUDA build for this pin, add PyTorch's CPU index:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH := torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test lint typecheck pytest venv clean

# The demo needs the base package only: no torch, no extras.
$(BASE_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $(BASE_STAMP)

# Everything the checks need: torch (CPU, pinned), the test, etcd, fast, metrics and watch extras.
$(STAMP): $(BASE_STAMP)
	$(PIP) install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PIP) install -q -e ".[test,etcd,fast,metrics,watch]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(BASE_STAMP)
	$(PY) -m rdzv.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
