# The two commands of the quick start:
#   make demo   set up, then run the whole pipeline on the bundled example project
#   make test   set up, then lint, type-check and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/example

.PHONY: demo test lint typecheck pytest bench clean test-torch-newest

# constraints.txt pins torch to the CPU build on this machine's disk: unpinned, pip takes a
# CUDA build (a 6.9 GB venv, and an import that maps gigabytes of CUDA libraries).
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet -e '.[dev]'
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

# --dist loadscope: one test module per worker at a time, so a module's expensive fixtures
# (an act or gitlab-ci-local pipeline run, the wheel's venvs) are made once. (loadgroup's
# xdist_group marks are silently ignored by pytest-xdist 3.8 on pytest 9: tests of one
# group were spread over both workers and each ran the pipelines again.)
pytest: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadscope --durations=20

test: lint typecheck pytest

# [train] admits torch 2.13.0 to 2.14.1. `make test` runs on the lowest (the CPU build on
# this machine's disk); this runs the model tests on the newest, in a venv of its own (on
# x86_64 2.14.1 is a CUDA build of about 5.5 GB, so it is not part of `make test`).
NEWEST := .venv-torch-newest
test-torch-newest:
	$(PYTHON) -m venv $(NEWEST)
	echo "torch==2.14.1" > $(NEWEST)/constraints.txt
	PIP_CONSTRAINT=$(NEWEST)/constraints.txt $(NEWEST)/bin/pip install --quiet -e '.[dev]'
	$(NEWEST)/bin/python -m pytest tests/model tests/test_extras.py -q -p no:cacheprovider

bench: $(BIN)/.installed
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf out .ci-ml-cache .pytest_cache .mypy_cache
