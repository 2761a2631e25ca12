# Two commands for a newcomer: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint bench venv rabbitmq clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,postgres,sandbox,dev]'
	touch $(STAMP)

rabbitmq:
	@scripts/ensure-rabbitmq

## The whole system with sandbox agencies, on SQLite (./var/) and the local RabbitMQ.
demo: venv rabbitmq
	$(BIN)/satupintu db upgrade
	$(BIN)/satupintu run --demo

## Every test: unit, integration (real RabbitMQ), end to end (real processes).
test: venv rabbitmq
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## Unit tests only: no broker, no servers.
test-fast: venv
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

lint: venv
	$(BIN)/ruff check .

bench: venv rabbitmq
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
