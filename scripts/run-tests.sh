#!/usr/bin/env bash
# The whole suite, slow and browser tests included (the README's test command runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
bash scripts/setup-browser.sh  # Debian chromium for the app's browser test
.venv/bin/python -m pytest -q --durations=25 "$@"
