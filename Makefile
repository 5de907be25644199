# newswatch — every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run demo test lint docs gate bench airflow freeze clean

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

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check pipeline dags plugins tests benchmarks docs

# Rewrite the generated parts of README.md and docs/cli.md (tests/test_docs.py checks them).
docs: install
	$(BIN)/cog -r README.md docs/cli.md

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
	rm -rf $(VENV) data/demo
