# newswatch — every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# TypeScript compiler for `pytest -m esspec` (request bodies vs the Elasticsearch API spec).
TSC_VERSION := 5.9.3
TSC := .cache/tsc/node_modules/.bin/tsc
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run demo test lint docs gate bench airflow freeze clean esspec-tools

install: $(STAMP)

# Re-run only when the pins or the project metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: install
	$(BIN)/newswatch run --config config/newswatch.yaml

demo: install
	$(BIN)/newswatch demo --config examples/demo.yaml

test: install $(if $(shell command -v npm),esspec-tools)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

esspec-tools: $(TSC)

$(TSC):
	npm install --prefix .cache/tsc --no-audit --no-fund --silent typescript@$(TSC_VERSION)

lint: install
	$(BIN)/ruff check pipeline dags plugins tests benchmarks docs

# Rewrite the generated parts of README.md and docs/cli.md (tests/test_docs.py checks them).
docs: install
	$(BIN)/cog -r README.md docs/cli.md docs/decisions.md

# The evaluation gate: quality benchmarks on ../shared/data against benchmarks/baseline.json.
gate: install
	$(BIN)/python benchmarks/gate.py --data ../shared/data

bench: install
	$(BIN)/python benchmarks/extraction.py --data ../shared/data/extraction/aeb-dev

airflow: install
	$(BIN)/python -m pipeline.airflow_local

freeze:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch==' > requirements.txt.new

clean:
	rm -rf $(VENV) data/demo .cache/tsc
