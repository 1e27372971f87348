# sessionguard — the commands of the README's quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test bench lint system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: install, then start the sidecar with the embedded defaults and the demo pages.
run: $(STAMP)
	$(BIN)/sessionguard demo

## make test: install what the tests need (Chromium included) and run the whole suite.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make bench: speed and memory figures, written to bench/RESULTS.md sections.
bench: $(STAMP) system-deps
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check signals rules monitor tests bench
	$(BIN)/mypy

system-deps:
	@sh scripts/system-deps.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
