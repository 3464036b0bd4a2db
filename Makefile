# The two commands a newcomer needs: `make run` and `make test`.
# Both create ./.venv and install Emailer into it the first time (and again
# whenever pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test bench lint typecheck clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

## run: start Emailer on its embedded defaults (in-memory bus, SQLite, folders under ./var)
run: $(STAMP)
	$(BIN)/emailer run

## test: the whole suite (unit, integration, end-to-end)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The bench extra (Celery, for the peers) goes into the same .venv, only when benchmarking.
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

## bench: throughput benchmark against RabbitMQ + PostgreSQL + the sandbox, beside the baseline and Celery
bench: $(BENCH_STAMP)
	$(BIN)/python bench/throughput.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check contracts handlers emailer tests bench examples clients/python/src/emailer_client

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
