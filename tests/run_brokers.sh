#!/usr/bin/env bash
# The suite once per broker named in BROKERS, all at the same time: each run starts its own
# broker and Postgres on free ports and in temporary directories, and most of a run waits
# on them, so two runs on two cores take little longer than the slower one alone (the
# whole CI must end within 30 minutes). Every line is prefixed with its broker; the exit
# status is non-zero when any run fails. Usage: BROKERS="tansu kafka" PYTHON=... $0 [pytest args]
set -uo pipefail
: "${BROKERS:?name the brokers to test on, e.g. tansu kafka}" "${PYTHON:?the python of the virtual environment}"

pids=()
for broker in $BROKERS; do
  echo "== the test suite on $broker"
  (
    # No cache provider: two runs writing .pytest_cache at once would race for nothing.
    PHASESTREAM_TEST_BROKER=$broker "$PYTHON" -m pytest -p no:cacheprovider "$@" 2>&1 \
      | sed -u "s/^/[$broker] /"
    exit "${PIPESTATUS[0]}"
  ) &
  pids+=("$!")
done

status=0
set -- $BROKERS
for pid in "${pids[@]}"; do
  if wait "$pid"; then echo "== $1: passed"; else echo "== $1: FAILED"; status=1; fi
  shift
done
exit "$status"
