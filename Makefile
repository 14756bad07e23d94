# anoncard: `make demo` and `make test` work from a fresh clone (Python 3.11, pip, venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/anoncard demo

test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/ruff check anoncard cli tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/checkout.py

lint: $(STAMP)
	$(BIN)/ruff check anoncard cli tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
