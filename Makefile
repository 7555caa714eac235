# One-command set-up: `make demo` runs the main job, `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Exact pin: any range may resolve to a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test lint typecheck pytest venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test,etcd,fast,metrics,watch]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
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
