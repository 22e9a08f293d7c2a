# gir-ops: two commands on a fresh machine: `make run` (the stack with simulated DCs) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench bench-deps clean venv demo-drift demo-missing demo-replicate demo-restore browser-deps jdk-deps doctor

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

## The whole stack: embedded PostgreSQL, the GIR simulator, Airflow standalone. Ctrl-C stops it all.
run: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py

## The deployment doctor (DAG gir_doctor) on the running `make run` stack: the table, exit 1 when red.
## Elsewhere, from a shell with the Airflow environment: python -m include.gir_ops.doctor
doctor: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py doctor

## Demo: make one RCS keystore differ (INSTANCE=rcs-dc2-a), then make them all identical again.
INSTANCE ?= rcs-dc2-a
demo-drift: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py drift $(INSTANCE)

## Demo: remove one RCS keystore (MISSING=rcs-dc3-a); then replicate (admin triggers, approver approves).
MISSING ?= rcs-dc3-a
demo-missing: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py remove-keystore $(MISSING)

demo-replicate: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py replicate

demo-restore: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/run_stack.py restore-keystores

## Lint and the whole test suite (unit, dag.test(), real engine, browser). CI runs exactly this.
test: $(STAMP) browser-deps jdk-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=$(CURDIR) $(VENV)/bin/pytest

## What the browser test drives: Debian's chromium and chromedriver. Installed when missing and run as
## root (CI, containers); otherwise make stops and prints the command to run.
BROWSER_PACKAGES := chromium chromium-driver
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "--> installing $(BROWSER_PACKAGES) for the browser test"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
	else \
		echo "make test: the browser test needs chromium and chromedriver; install them, then run make test again:" >&2; \
		echo "    sudo apt-get update -qq && sudo apt-get install -y -qq $(BROWSER_PACKAGES)" >&2; \
		exit 1; \
	fi

## What the keystore tests make their JKS/JCEKS/PKCS12 keystores with: a JDK's keytool (and openssl).
JDK_PACKAGES := default-jdk-headless openssl
jdk-deps:
	@if command -v keytool >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "--> installing $(JDK_PACKAGES) for the keystore tests (keytool)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(JDK_PACKAGES) >/dev/null; \
	else \
		echo "make test: the keystore tests need keytool (a JDK) and openssl; install them, then run make test again:" >&2; \
		echo "    sudo apt-get update -qq && sudo apt-get install -y -qq $(JDK_PACKAGES)" >&2; \
		exit 1; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Benchmarks (not part of `make test`); writes docs/benchmarks.md. About 15 minutes on 2 quiet cores
## (docs/benchmarks.md lists each benchmark's time); needs ~25 GiB free in $$TMPDIR or GIR_BENCH_WORKDIR
## for the 8 GiB row (skipped, saying so, below 20 GiB). The shipping comparison needs Debian's rclone:
## installed when missing and run as root; otherwise make prints the command and the rclone rows say so.
bench: $(STAMP) bench-deps
	GIR_DEMO=1 PYTHONPATH=$(CURDIR) $(PY) -m benchmarks

BENCH_PACKAGES := rclone
bench-deps:
	@if command -v rclone >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "--> installing $(BENCH_PACKAGES) for the shipping benchmark"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_PACKAGES) >/dev/null; \
	else \
		echo "make bench: the shipping benchmark compares with rclone; install it for those rows:" >&2; \
		echo "    sudo apt-get update -qq && sudo apt-get install -y -qq $(BENCH_PACKAGES)" >&2; \
	fi

clean:
	rm -rf .local test-artifacts .pytest_cache .ruff_cache
