# NYC green-taxi trip-duration stack. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
BIN := $(VENV)/bin
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

# Real TLC months for local runs and tests; unset it to download from TLC instead.
SHARED_DATA := $(abspath ../shared/data/tlc)
ifneq ($(wildcard $(SHARED_DATA)/*.parquet),)
export TAXI_DATA_DIR ?= $(SHARED_DATA)
endif
# Optional local overrides (see .env.example); the Makefile never requires a .env.
ifneq ($(wildcard .env),)
include .env
export
endif

TRAIN_MONTH ?= 2023-01
VAL_MONTH ?= 2023-02

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

.PHONY: setup
setup: $(VENV)/.synced ## Create .venv from the lock file (uv.lock)

.PHONY: lock
lock: | $(UV) ## Re-resolve uv.lock after changing pyproject.toml
	$(UV) lock

.PHONY: lint
lint: setup ## Ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: setup ## Ruff: fix what can be fixed and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: train-local
train-local: setup ## Train once without any server (ephemeral Prefect, local MLflow store)
	$(BIN)/python -m flows.training --train-month $(TRAIN_MONTH) --val-month $(VAL_MONTH)

.PHONY: test-unit
test-unit: setup ## Unit tests (pure functions, no servers)
	$(BIN)/pytest tests/unit

.PHONY: test-integration
test-integration: setup ## Integration tests against real Prefect / MLflow / S3 / Postgres servers
	$(BIN)/pytest tests/integration

.PHONY: test-e2e
test-e2e: setup ## End-to-end tests of the whole stack (native, then Docker)
	$(BIN)/pytest tests/e2e

.PHONY: test
test: setup ## All tests: unit, integration and end-to-end (the README's test command)
	$(BIN)/pytest tests/unit tests/integration tests/e2e

.PHONY: bench
bench: setup ## Benchmarks: training vs the course recipe, serving vs mlflow models serve
	$(BIN)/python bench/training.py --all
	$(BIN)/python bench/serving.py

.PHONY: clean
clean: ## Remove the virtualenvs and caches (not your NYCTAXI_HOME data)
	rm -rf $(VENV) .uv .pytest_cache .ruff_cache
