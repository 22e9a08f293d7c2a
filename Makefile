# gir-ops: two commands on a fresh machine: `make run` (the stack with simulated DCs) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench clean venv demo-drift demo-restore

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

## The whole stack: embedded PostgreSQL, the GIR simulator, Airflow standalone. Ctrl-C stops it all.
run: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py

## Demo: make one RCS keystore differ (INSTANCE=rcs-dc2-a), then make them all identical again.
INSTANCE ?= rcs-dc2-a
demo-drift: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py drift $(INSTANCE)

demo-restore: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py restore-keystores

## Lint and the whole test suite (unit, dag.test(), real engine, browser). CI runs exactly this.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=$(CURDIR) $(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Benchmarks (not part of `make test`); writes docs/benchmarks.md.
bench: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m benchmarks

clean:
	rm -rf .local test-artifacts .pytest_cache .ruff_cache
