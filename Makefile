# spondyscan — `make help` lists the targets. Research use only, not a diagnosis.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= ../shared/data
DATASET ?= var/dataset
# pytest-xdist processes for the part of the suite that may run in parallel (one per core here)
TEST_WORKERS ?= 2
# The Python suite's two parts (README, Testing). `make test` measures coverage on the parallel
# part only: the tracer slows the serial part (13 % measured) and would change what it times.
PARALLEL_PART := -m "not slow and not orthanc and not serial" -n $(TEST_WORKERS) --dist loadscope
SERIAL_PART   := -m "serial and not slow and not orthanc"
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow
export PYTHONUNBUFFERED := 1

.PHONY: help setup run test coverage test-slow test-pacs dicom-tools lint format prepare train results bench client spa chromium frontend-test clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project (idempotent)

spa: ## build the web app into frontend/dist (when the frontend exists)
	@if [ -f frontend/package.json ]; then cd frontend && npm ci --no-audit --no-fund && npm run build; fi

run: setup spa ## install what is missing, build the SPA, serve the API with SQLite and the bundled models
	$(BIN)/spondyscan serve

test: setup lint dicom-tools ## lint, type-check, check the layers, run the test suite (what CI runs)
	$(BIN)/pytest $(PARALLEL_PART) --cov --cov-report=term:skip-covered --durations=15
	$(BIN)/pytest $(SERIAL_PART) --durations=15
	$(MAKE) test-pacs
	@if [ -f frontend/package.json ]; then $(MAKE) frontend-test; fi

coverage: setup dicom-tools ## the Python suite of make test with both parts under coverage; HTML report in htmlcov/
	$(BIN)/pytest $(PARALLEL_PART) --cov --cov-report=
	$(BIN)/pytest $(SERIAL_PART) --cov --cov-append --cov-report=term:skip-covered --cov-report=html

test-pacs: setup dicom-tools ## the round trip with a real PACS (Orthanc), in a loopback-only network namespace
	unshare -n sh -c 'ip link set lo up && exec $(BIN)/pytest -m orthanc -p no:cacheprovider'

dicom-tools: ## install Debian's Orthanc (+ DICOMweb plugin) and dicom3tools when missing
	@{ command -v Orthanc && command -v dciodvfy && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so; } >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb dicom3tools >/dev/null; }

test-slow: setup ## the slow tests: real bundles, real training
	$(BIN)/pytest -m slow

lint: setup ## ruff (lint + format check), mypy, import contracts (the layers)
	$(BIN)/ruff check ml backend tests bench
	$(BIN)/ruff format --check ml backend tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: setup ## apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix ml backend tests bench
	$(BIN)/ruff format ml backend tests bench

prepare: setup ## build the training set from ../shared/data/lumbar_mri into $(DATASET)
	$(BIN)/spondyscan prepare --source lumbar-mri $(SHARED)/lumbar_mri --out $(DATASET)

train: setup ## train every shipped model (CONFIGS=... to pick some) on $(DATASET)
	$(BIN)/python -m ml.training.train_all --dataset $(DATASET) $(if $(CONFIGS),--configs $(CONFIGS),)

results: setup ## print the results table (design vs ours) from the bundles' manifests
	$(BIN)/python -m ml.evaluation.results_table --models-dir models

bench: setup ## benchmark: design-style path vs ours
	$(BIN)/python -m bench.run

client: setup ## regenerate the typed frontend API client from the OpenAPI schema
	$(BIN)/python -m backend.openapi_dump frontend/openapi.json
	cd frontend && npm ci --no-audit --no-fund && npm run client

chromium: ## install Debian's headless Chromium for the browser suite (when missing)
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

frontend-test: chromium ## frontend unit + browser suites (the browser suite drives the real API)
	cd frontend && npm ci --no-audit --no-fund && npm test

clean: ## remove build outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .mypy_cache htmlcov .coverage frontend/dist
