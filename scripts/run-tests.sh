#!/usr/bin/env bash
# The whole suite, slow and browser tests included (the README's test command runs this).
# Two pytest workers, one OpenMP thread each: the suite's models are small, and two-thread torch
# processes next to the app server, sweep workers and notebook kernels spin-wait on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
bash scripts/setup-browser.sh  # Debian chromium for the app's browser test
echo "ruff check (lint + import order) and mypy (types) on the whole tree"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile --durations=25 "$@"
