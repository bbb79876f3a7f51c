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
# Optional local overrides (see .env.example); the Makefile never requires a .env. Only the
# variables named in .env are exported, and variables set in your shell win over it.
ifneq ($(wildcard .env),)
DOTENV_NAMES := $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' .env)
FROM_SHELL := $(foreach name,$(DOTENV_NAMES),$(if $(filter environment,$(origin $(name))),$(name)))
$(foreach name,$(FROM_SHELL),$(eval SHELL_VALUE_$(name) := $$(value $(name))))
include .env
$(foreach name,$(FROM_SHELL),$(eval $(name) := $$(SHELL_VALUE_$(name))))
export $(DOTENV_NAMES)
endif
# The native stack's generated credentials (`make run` writes them once): every target finds
# them. Variables from your shell or `.env` win over them.
NATIVE_CREDENTIALS := $(patsubst ~/%,$(HOME)/%,$(or $(NYCTAXI_HOME),$(HOME)/.local/share/nyctaxi))/credentials.env
ifneq ($(wildcard $(NATIVE_CREDENTIALS)),)
CREDENTIAL_LINES := $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_:=.-]*\)$$/\1/p' '$(NATIVE_CREDENTIALS)')
$(foreach line,$(CREDENTIAL_LINES),$(if $(filter undefined,$(origin $(firstword $(subst =, ,$(line))))),$(eval export $(line))))
endif
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
PREDICT_PORT ?= 9696

# MINIO_CONSOLE=true: `make up` also starts MinIO's web console (docker-compose.minio-console.yml).
# PREDICT_EVENTS=true: the prediction service announces refused versions as Prefect events.
COMPOSE_FILES := -f docker-compose.yml $(if $(filter true,$(MINIO_CONSOLE)),-f docker-compose.minio-console.yml) $(if $(filter true,$(PREDICT_EVENTS)),-f docker-compose.predict-events.yml)

TRAIN_MONTH ?= 2023-01
VAL_MONTH ?= 2023-02
# A training window instead of TRAIN_MONTH: TRAIN_FROM=2022-01 TRAIN_TO=2022-03 (both included).
TRAIN_FROM ?=
TRAIN_TO ?=
ifneq ($(TRAIN_FROM)$(TRAIN_TO),)
TRAIN_PARAMS := --param train_from=$(or $(TRAIN_FROM),$(TRAIN_TO)) --param train_to=$(or $(TRAIN_TO),$(TRAIN_FROM))
TRAIN_ARGS := --train-from $(or $(TRAIN_FROM),$(TRAIN_TO)) --train-to $(or $(TRAIN_TO),$(TRAIN_FROM))
else
TRAIN_PARAMS := --param train_month=$(TRAIN_MONTH)
TRAIN_ARGS := --train-month $(TRAIN_MONTH)
endif
DEPLOYMENT ?= training/train-local
# make monitor / monitor-backfill / monitor-live
MONTH ?=
FROM ?=
TO ?=
HOURS ?= 24
STACK_PREFECT_API := PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api}

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

.PHONY: run
run: setup ## Run the whole stack as local processes (SQLite, local files); Ctrl-C stops it
	$(BIN)/python -m stack.run

.PHONY: train
train: setup ## Run a training deployment on the running stack and wait; says why if it fails: TRAIN_MONTH or TRAIN_FROM/TRAIN_TO, VAL_MONTH
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} \
	  $(BIN)/python -m stack.trigger $(DEPLOYMENT) \
	  $(TRAIN_PARAMS) --param val_month=$(VAL_MONTH)

.PHONY: monitor
monitor: setup ## Monitor the champion on a labelled month on the running stack and wait (a degraded month starts a retraining): MONTH=YYYY-MM
	@[[ "$(MONTH)" =~ ^[0-9]{4}-[0-9]{2}$$ ]] || { echo "usage: make monitor MONTH=YYYY-MM (e.g. MONTH=2023-03), got MONTH='$(MONTH)'" >&2; exit 2; }
	$(STACK_PREFECT_API) $(BIN)/python -m stack.trigger monitoring/monitor-month --param month=$(MONTH)

.PHONY: monitor-backfill
monitor-backfill: setup ## Monitor each month from FROM to TO in order, each run waited for; stops at the first failure: FROM=YYYY-MM TO=YYYY-MM
	$(STACK_PREFECT_API) $(BIN)/python -m stack.backfill --from '$(FROM)' --to '$(TO)'

.PHONY: monitor-live
monitor-live: setup ## Drift of the rides served in the last HOURS (prediction log) on the running stack, and wait: HOURS=24
	$(STACK_PREFECT_API) $(BIN)/python -m stack.trigger monitoring-live/monitor-live --param window_hours=$(HOURS)

.PHONY: batch
batch: setup ## Score a month with the champion on the running stack and wait (batch/score-month): MONTH=YYYY-MM
	@[[ "$(MONTH)" =~ ^[0-9]{4}-[0-9]{2}$$ ]] || { echo "usage: make batch MONTH=YYYY-MM (e.g. MONTH=2023-03), got MONTH='$(MONTH)'" >&2; exit 2; }
	$(STACK_PREFECT_API) $(BIN)/python -m stack.trigger batch/score-month --param month=$(MONTH)

.PHONY: batch-local
batch-local: setup ## Score a month without any server (local MLflow store; on DASK_SCHEDULER_ADDRESS if set): MONTH=YYYY-MM
	$(BIN)/python -m flows.batch --month $(MONTH)

.PHONY: train-local
train-local: setup ## Train once without any server (local MLflow store; on DASK_SCHEDULER_ADDRESS if set): TRAIN_MONTH or TRAIN_FROM/TRAIN_TO, VAL_MONTH
	$(BIN)/python -m flows.training $(TRAIN_ARGS) --val-month $(VAL_MONTH)

.PHONY: serve
serve: setup ## Only the prediction service on 127.0.0.1 (PREDICT_HOST), on MLFLOW_TRACKING_URI (default: train-local's store)
	$(if $(MLFLOW_PREDICTOR_PASSWORD),MLFLOW_TRACKING_USERNAME=predictor MLFLOW_TRACKING_PASSWORD="$$MLFLOW_PREDICTOR_PASSWORD") \
	  $(BIN)/gunicorn --config services/predict/gunicorn_conf.py "services.predict.app:create_app()"

.PHONY: env
env: ## Docker: create .env with random secrets (or add the ones it lacks); refuses change-me values
	$(PYTHON) -m stack.envfile --file .env --example .env.example

.PHONY: up
up: env ## Docker: build the images (platform, predict) and start the whole stack in the background
	$(if $(TAXI_DATA_DIR),TAXI_DATA_HOST_DIR=$${TAXI_DATA_HOST_DIR:-$(TAXI_DATA_DIR)}) \
	  $(COMPOSE) $(COMPOSE_FILES) up -d --build
	@echo "Prefect http://localhost:$(PREFECT_PORT)  MLflow http://localhost:$(MLFLOW_PORT)  predict http://localhost:$(PREDICT_PORT)/predict  (make ps, make logs)"

.PHONY: down
down: ## Docker: stop the stack, keep its data (volumes)
	$(COMPOSE) down

.PHONY: down-volumes
down-volumes: ## Docker: stop the stack and delete its data (Postgres, MinIO, worker and model caches: every volume)
	$(COMPOSE) down -v

# Backups (README, Backups): stack.backup runs on the venv's python, else the host's python3
# (enough for the Docker stack). BACKUP_STACK=auto picks Docker when its postgres runs.
.PHONY: backup
backup: ## Back up the running stack into BACKUP_DIR (default backups/): BACKUP_STACK=auto|native|docker, WITH_SECRETS=true
	COMPOSE_COMMAND="$(COMPOSE) $(COMPOSE_FILES)" \
	  $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m stack.backup backup \
	  --stack "$(or $(BACKUP_STACK),auto)" --into "$(or $(BACKUP_DIR),backups)" \
	  $(if $(filter true,$(WITH_SECRETS)),--with-secrets)

.PHONY: restore
restore: ## Restore BACKUP=path onto an empty stack (native: stopped; Docker: after make down); FORCE=true replaces its data
	@test -n "$(BACKUP)" || { echo "usage: make restore BACKUP=backups/nyctaxi-<stack>-<time>" >&2; exit 2; }
	COMPOSE_COMMAND="$(COMPOSE) $(COMPOSE_FILES)" \
	  $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m stack.backup restore "$(BACKUP)" \
	  $(if $(filter true,$(FORCE)),--force)

.PHONY: ps
ps: ## Docker: services and their health
	$(COMPOSE) ps

.PHONY: logs
logs: ## Docker: follow the logs of every service
	$(COMPOSE) logs -f --tail=100

.PHONY: test-unit
test-unit: setup ## Unit tests (pure functions, no servers)
	$(BIN)/pytest tests/unit

.PHONY: test-integration
# The Postgres drill points this process's Prefect client at a server of its own, and Prefect's
# in-process services (events, concurrency slots) keep the first API they talk to: it runs in a
# pytest process of its own, so the other tests' flows never talk to its server once it is gone.
ISOLATED := tests/integration/test_postgres_restart.py

test-integration: setup ## Integration tests against real Prefect / MLflow / S3 / Postgres servers
	$(BIN)/pytest tests/integration --ignore=$(ISOLATED)
	$(BIN)/pytest $(ISOLATED)

.PHONY: test-e2e
test-e2e: setup ## End-to-end tests of the whole stack (native, then Docker)
	$(BIN)/pytest tests/e2e

.PHONY: test-e2e-docker
test-e2e-docker: setup ## Only the Docker end-to-end test (installs and starts dockerd if needed, as root)
	$(BIN)/pytest -m docker tests/e2e

.PHONY: test
test: setup ## All tests: unit, integration and end-to-end (the README's test command)
	$(BIN)/pytest tests/unit tests/integration tests/e2e --ignore=$(ISOLATED)
	$(BIN)/pytest $(ISOLATED)

.PHONY: bench
bench: bench-training bench-serving ## Both benchmarks

.PHONY: bench-training
bench-training: setup ## Training benchmark: our pipeline vs the course recipe, same months
	$(BIN)/python bench/training.py --all

.PHONY: bench-batch
bench-batch: setup ## Batch scoring of one month: library in-process rows/s vs the same month through the Prefect flow
	$(BIN)/python bench/batch.py

.PHONY: bench-scale
bench-scale: setup ## Fit time and peak memory per process: in-process vs Dask 1 and 2 workers, 1/3/9 real months and 10x/30x synthetic; SCALE_ARGS=--quick
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

.PHONY: bench-cli
bench-cli: setup ## Training command: in-process vs the flow on a throwaway Prefect server (3 runs each)
	$(BIN)/python bench/cli_training.py

.PHONY: bench-serving
bench-serving: setup ## Serving benchmark: our service vs mlflow models serve (needs wrk)
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/serving.py

.PHONY: bench-serving-log
bench-serving-log: setup ## Serving with the prediction log on vs off, same run, same load (needs wrk)
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/serving_log.py

.PHONY: bench-soak
bench-soak: setup ## Soak: 10 min steady /predict load, champion moved every 2 min; SOAK_ARGS (e.g. --predict-url, --tracking-uri)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

.PHONY: clean
clean: ## Remove the virtualenvs and caches (not your NYCTAXI_HOME data)
	rm -rf $(VENV) .uv .pytest_cache .ruff_cache
