# sparsesweep developer commands (GNU make >= 3.82).
#   make venv                    create ./.venv and install the project + dev extras
#   make test [PYTEST_ARGS=...]  run the test suite          e.g. PYTEST_ARGS="-k cluster -x"
#                                (TEST_WORKERS=2 pytest-xdist processes, one test file each)
#   make sweep ARGS="..."        python -m orchestrator.sweep ARGS
#   make ui [STORAGE=dir] [PORT=n]  MLflow UI of a sweep storage dir (default sparsesweep-runs) on a
#                                free port (or PORT); prints the link to the latest sweep's saved view
#   make lint                    ruff check .
#   make bench [ARGS=...]        python -m benchmarks ARGS: the one benchmark table (light CPU run)
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
.PHONY: help venv test sweep ui lint bench mutate

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
	$(VENV_PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

sweep: venv
	$(VENV_PY) -m orchestrator.sweep $(ARGS)

ui: venv
	$(VENV_PY) -m orchestrator.tracking.ui --storage $(STORAGE) $(if $(PORT),--port $(PORT))

lint: venv
	$(VENV_PY) -m ruff check .

bench: venv
	$(VENV_PY) -m benchmarks $(ARGS)

# Each surviving mutant is a formula whose test cannot see it break: `mutmut results`, then
# `mutmut show NAME`. Settings (what to mutate, which tests) in pyproject.toml [tool.mutmut].
mutate: venv
	$(VENV_PY) -m pip install -q 'mutmut>=3.3'
	$(VENV)/bin/mutmut run
	$(VENV)/bin/mutmut results
