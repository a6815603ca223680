#!/usr/bin/env bash
# Set up (first run) and start the app on http://localhost:8501 with the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
exec .venv/bin/python -m streamlit run streamlit_app.py "$@"
