# kpimon developer entry points. `make help` lists them.
# Everything a fresh machine needs is installed by these targets: the virtualenv and the package, Java and
# Maven when missing (Debian's packages), and Apache Kafka's jars (Maven Central, fetched on first use).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# `make run` needs kpimon alone, not the dev tools: its own stamp (satisfied by a full `make setup` too).
RUN_STAMP := $(VENV)/.installed-run-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The compiled batch core: `pip install -e .` builds it (setuptools-rust), so a change of its sources installs again.
NATIVE := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
PYTEST_ARGS ?=
BENCH_ARGS ?=
BUDGET_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup system-deps demo-deps run test test-python-core lint typecheck format unit bench bench-quick kafka-start kafka-stop clean generate alert-budget

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

system-deps:  ## install Java 17+, Maven, Prometheus (promtool), Alertmanager (amtool) and tmux (Debian packages) when missing
	@./deploy/system-deps.sh

demo-deps:  ## install only what `make run` needs (Java 17+ and Maven) when missing
	@./deploy/system-deps.sh demo

$(STAMP): pyproject.toml $(NATIVE)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kpimon needs Python 3.11+; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: system-deps $(STAMP)  ## create .venv and install kpimon with its dev tools

BENCH_STAMP := $(VENV)/.bench-$(shell cksum pyproject.toml | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@rm -f $(VENV)/.bench-*
	@touch $@

$(RUN_STAMP): pyproject.toml $(NATIVE)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kpimon needs Python 3.11+; set PYTHON=python3.11")'
	@if [ -f $(STAMP) ]; then touch $@; else \
	  $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --upgrade pip && \
	  $(BIN)/pip install --quiet -e . && touch $@; fi

run: demo-deps $(RUN_STAMP)  ## the demo: its own Kafka, a worker, 60 days of history, then live traffic in `kpimon top`
	$(BIN)/kpimon demo

lint: setup  ## ruff (lint + format check), the import contracts (import-linter), amtool check-config, cargo fmt --check and clippy on native/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	amtool check-config deploy/alertmanager/alertmanager.yml
	@# The compiled core is built wherever cargo is (rustup's default profile brings rustfmt and clippy);
	@# clippy is told the interpreter `make setup` built for (PYO3_PYTHON), as pip told pyo3's build script,
	@# and checks the release profile `make setup` built: it reuses those build scripts (15 s in a fresh
	@# clone at load 7, against about 60 s for a cold debug check).
	@if command -v cargo >/dev/null; then \
	  echo "cd native && cargo fmt --check && cargo clippy --release --all-targets -- -D warnings"; \
	  cd native && cargo fmt --check && PYO3_PYTHON=$(CURDIR)/$(BIN)/python3 cargo clippy --release --all-targets -- -D warnings; \
	else echo "no cargo: native/ not checked (nor built: workers run the Python engine)"; fi

typecheck: setup  ## mypy --strict
	$(BIN)/mypy

unit: setup  ## the fast unit tests only
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

# The unit tests are CPU-bound and independent of each other: pytest-xdist runs them in TEST_CPUS processes,
# whole files at a time (a module's fixtures, such as the promtool runs, still run once). The Kafka tests
# follow, serially as before: they share one broker and time what they start. PYTEST_ARGS go to both runs.
TEST_CPUS ?= 2

test: setup lint typecheck  ## everything CI runs: lint, types, the whole test suite (real Kafka)
	$(BIN)/pytest -q -n $(TEST_CPUS) --dist loadfile tests/unit $(PYTEST_ARGS)
	$(BIN)/pytest -q tests/integration $(PYTEST_ARGS)

# The fault, security, hostile-input and dead-letter tests with the Python engine (`make test` runs them with
# the compiled core; of them only the hostile-input test and the secured worker's with both, which is all
# its time budget holds). Every worker they start is checked to run the core KPIMON_CORE asks for.
PYTHON_CORE_TESTS := $(addprefix tests/integration/,test_reliability.py test_security.py \
	test_hostile_input.py test_cluster.py test_dead_letters.py)

test-python-core: setup  ## the reliability, security, hostile-input, cluster and dead-letter tests with the Python batch core (~17 min)
	KPIMON_CORE=python $(BIN)/pytest -q $(PYTHON_CORE_TESTS) $(PYTEST_ARGS)

bench: setup $(BENCH_STAMP)  ## the benchmark suite (issue #7): its own Kafka, 1M events, ~40-70 min; BENCH_ARGS=--help
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: setup $(BENCH_STAMP)  ## a small smoke run of every benchmark stage (a few minutes)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

format: setup  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

kafka-start: setup  ## start the local Kafka on 127.0.0.1:9092
	$(BIN)/kpimon kafka start

kafka-stop: setup  ## stop the local Kafka
	$(BIN)/kpimon kafka stop

clean:  ## remove the virtualenv and caches (not ~/.kpimon)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

alert-budget: setup  ## back-test the alert rules on a simulated history (BUDGET_ARGS=--help; ~30 min for the default 90 days)
	$(BIN)/python -m monitoring.backtest $(BUDGET_ARGS)

generate: setup  ## regenerate committed generated files (JSON Schemas, ...)
	$(BIN)/python -m scripts.generate
