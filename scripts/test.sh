#!/usr/bin/env bash
# Set up (first run) and run every check: lint, the test suite (incl. the real-browser and
# privacy tests), the quick benchmark and the dependency audit.
set -euo pipefail
cd "$(dirname "$0")/.."
# each stage's header says when it started (seconds since this script began), so a CI log
# shows where its time went
stage() { echo "== $1 (at ${SECONDS} s)"; }
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  stage "installing Debian chromium for the browser tests"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
bash scripts/setup.sh requirements-dev.txt
if [ ! -f .jax-site/.installed ]; then
  stage "installing jax into .jax-site (for the training-without-TensorFlow test only)"
  .venv/bin/pip install -q --no-deps --target .jax-site -r requirements-jax.txt
  touch .jax-site/.installed
fi
export TF_CPP_MIN_LOG_LEVEL=2
# Every test must run here: a missing dataset, Playwright or Chromium fails instead of skipping.
export SKIN_TESTS_STRICT=1
stage "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exit 5 ("no tests collected") is not a failure: a -k/-m selection may leave one of
# the two groups empty
run_pytest() {
  local rc=0
  .venv/bin/python -m pytest -q "$@" || rc=$?
  if [ "$rc" = 5 ]; then rc=0; fi
  return "$rc"
}
stage "pytest, two workers (a test file stays on one worker and its fixtures)"
run_pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile -m "not browser" --durations=25 "$@"
stage "pytest, the real-browser tests alone (they drive a live server against the clock)"
run_pytest -m browser "$@"
stage "benchmark (quick; figures only, no time assertions)"
.venv/bin/python -m skin_model bench --quick --out "${TMPDIR:-/tmp}/bench-quick.json"
stage "dependency audit"
# Exit 3 means nothing could be audited (CI reaches PyPI's packages but not its
# vulnerability service): reported here, not counted as a test failure.
status=0
.venv/bin/python scripts/audit.py || status=$?
if [ "$status" = 3 ]; then
  echo "== audit incomplete: the vulnerability service was not reachable (exit 3)"
elif [ "$status" != 0 ]; then
  exit "$status"
fi
stage "done"
