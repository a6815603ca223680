#!/usr/bin/env bash
# Set up (first run, or after requirements.txt changed) and start the app on
# http://localhost:8501 with the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
echo "Starting the app on http://localhost:8501 (the model loads on the first visit, ~10 s)"
exec .venv/bin/python -m streamlit run streamlit_app.py "$@"
