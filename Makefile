# anoncard: `make demo` and `make test` work from a fresh clone (Python 3.11, pip, venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-sqlite test-postgres bench bench-suggestions stress lint clean

BENCH_STAMP := $(VENV)/.installed-bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,insights,suggest]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/anoncard demo

# the whole suite on each backend, side by side on two cores: SQLite, and PostgreSQL (a throwaway
# cluster the run starts); each pass's output is printed when it ends
test: $(STAMP)
	$(BIN)/ruff check anoncard cli tests benchmarks
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

test-sqlite test-postgres: test-%: $(STAMP)
	$(BIN)/python -m pytest --backend $*

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,insights,suggest,bench]'
	touch $(BENCH_STAMP) $(STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py

bench-suggestions: $(BENCH_STAMP)
	$(BIN)/python benchmarks/suggestions.py --json benchmarks/results/suggestions.json

STRESS_TESTS := tests/test_reliability.py tests/test_crash.py tests/test_backup.py tests/test_hostile_input.py \
	tests/test_coupons.py tests/test_offline_kill.py tests/test_chain.py tests/test_postgres.py

# the issue's sizes, on each backend
stress: $(STAMP)
	ANONCARD_STRESS=1 $(BIN)/python -m pytest --backend sqlite $(STRESS_TESTS)
	ANONCARD_STRESS=1 $(BIN)/python -m pytest --backend postgres $(STRESS_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check anoncard cli tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
