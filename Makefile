# The two commands of the quick start:
#   make demo   set up, then run the whole pipeline on the bundled example project
#   make test   set up, then lint, type-check and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/example

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# ISLP ships the Hitters data set the tests use; its own dependencies (lightning,
	# lifelines, statsmodels, ...) serve its labs, not its data files: data only.
	$(BIN)/pip install --quiet --no-deps 'ISLP==0.6.0'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/ci-ml run --config fixtures/example/ci-ml.yaml --out $(OUT)

lint: $(BIN)/.installed
	$(BIN)/ruff check ci_ml tests benchmarks scripts

typecheck: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test: lint typecheck pytest

bench: $(BIN)/.installed
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf out .ci-ml-cache .pytest_cache .mypy_cache
