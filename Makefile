# Two commands for a newcomer: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-postgresql test-fast lint bench venv rabbitmq browser clamav clean

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

## Debian's chromium for the browser tests (Playwright cannot download one here); root + apt-get only.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update && apt-get install -y chromium) \
	  || echo "chromium missing: the browser tests will skip (apt-get install chromium)"; }

## Debian's clamav-daemon for the document tests (they start their own clamd with an EICAR-only
## database: freshclam cannot download here); root + apt-get only.
clamav:
	@command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y clamav-daemon) \
	  || echo "clamd missing: the document tests will fail (apt-get install clamav-daemon)"; }

## Every test: unit, integration (real RabbitMQ), end to end (real processes), browser.
## Each folder of tests in a pytest process of its own (scripts/pytest-each says why);
## PYTEST_ARGS go to every one, e.g. PYTEST_ARGS='-m "not cluster"'; TEST_DIRS picks folders.
TEST_DIRS ?= $(sort $(dir $(wildcard tests/*/test_*.py)))
TALLY    := var/test-tally
test: venv rabbitmq browser clamav
	@mkdir -p var; rm -f $(TALLY); status=0; \
	PYTEST_EACH_TALLY=$(TALLY) scripts/pytest-each $(BIN)/pytest $(TEST_DIRS) -- $(PYTEST_ARGS) || status=1; \
	PYTEST_EACH_TALLY=$(TALLY) $(MAKE) --no-print-directory test-postgresql || status=1; \
	echo "=== all passes"; scripts/pytest-each --total $(TALLY); exit $$status

## The tests that touch the store, again on PostgreSQL (a fresh database per test). Without a
## PostgreSQL this pass is skipped with a message, unless SATUPINTU_REQUIRE_POSTGRESQL=1 (CI).
## tests/scale is not repeated: it runs on PostgreSQL in the first pass already.
PG_TESTS ?= $(wildcard tests/api tests/documents tests/e2e tests/integration tests/ops tests/security)
test-postgresql: venv rabbitmq
	@if scripts/ensure-postgresql $(BIN)/python; then \
	  echo "=== again on PostgreSQL: $(PG_TESTS)"; \
	  SATUPINTU_TEST_DATABASE=postgresql scripts/pytest-each $(BIN)/pytest $(PG_TESTS) -- $(PYTEST_ARGS); \
	elif [ "$${SATUPINTU_REQUIRE_POSTGRESQL:-}" = 1 ]; then exit 1; \
	else echo "--- no PostgreSQL: the PostgreSQL pass is skipped"; fi

## Unit tests only: no broker, no servers.
test-fast: venv
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

lint: venv
	$(BIN)/ruff check .

bench: venv rabbitmq
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
