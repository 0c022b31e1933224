# sparsesweep developer commands (GNU make >= 3.82).
#   make venv                    create ./.venv and install the project + dev extras
#   make test [PYTEST_ARGS=...]  run the test suite          e.g. PYTEST_ARGS="-k cluster -x"
#                                (TEST_WORKERS=2 pytest-xdist processes, one test file each)
#   make sweep ARGS="..."        python -m orchestrator.sweep ARGS
#   make ui [STORAGE=dir] [PORT=n]  MLflow UI of a sweep storage dir (default sparsesweep-runs) on a
#                                free port (or PORT); prints the link to the latest sweep's saved view
#   make lint                    ruff check .
#   make bench [ARGS=...]        python -m benchmarks ARGS: the one benchmark table (light CPU run)
#   make docs                    build the documentation site into site/ (mkdocs build --strict)
#   make docs-serve              serve the documentation on http://127.0.0.1:8000, live reload
#   make mutate                  mutation testing of trainables/ (mutmut; hours, not in CI)
# Overridable: PYTHON (interpreter that creates the venv), VENV (its directory).

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
# Integration tests mostly wait (Ray start-up, subprocesses): two files at once fill 2 cores.
TEST_WORKERS ?= 2
ARGS ?=
STORAGE ?= sparsesweep-runs
PORT ?=

VENV_PY := $(VENV)/bin/python
# Written after a successful install; older than pyproject.toml => reinstall.
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv test sweep ui lint bench mutate docs docs-serve

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: bin/python is a symlink whose mtime is the base Python's.
$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install --upgrade pip
	$(VENV_PY) -m pip install -e '.[dev]'
	@touch $@

test: venv
	$(VENV_PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

sweep: venv
	$(VENV_PY) -m orchestrator.sweep $(ARGS)

ui: venv
	$(VENV_PY) -m orchestrator.tracking.ui --storage $(STORAGE) $(if $(PORT),--port $(PORT))

lint: venv
	$(VENV_PY) -m ruff check .

bench: venv
	$(VENV_PY) -m benchmarks $(ARGS)

# The reference pages are generated from this checkout's code (docs/gen_reference.py).
# DISABLE_MKDOCS_2_WARNING / NO_MKDOCS_2_WARNING: mkdocs-gen-files and Material print a banner
# about MkDocs' future on every build; mkdocs is pinned to 1.6.1.
DOCS_ENV := DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1
docs: venv
	$(DOCS_ENV) $(VENV)/bin/mkdocs build --strict

docs-serve: venv
	$(DOCS_ENV) $(VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8000

# Each surviving mutant is a formula whose test cannot see it break: `mutmut results`, then
# `mutmut show NAME`. Settings (what to mutate, which tests) in pyproject.toml [tool.mutmut].
mutate: venv
	$(VENV_PY) -m pip install -q 'mutmut>=3.3'
	$(VENV)/bin/mutmut run
	$(VENV)/bin/mutmut results
