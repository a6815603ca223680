#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the given requirements file into it; skipped when
# that file (and what it includes) has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ="${1:-requirements.txt}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# the digest covers the file and every file it includes with -r
stamp=".venv/.installed-$(basename "$REQ")"
digest=$(cat "$REQ" $(sed -n 's/^-r[[:space:]]*//p' "$REQ") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r "$REQ"
echo "$digest" > "$stamp"
