#!/usr/bin/env bash
# The sized-down full study in priority order (each finding on both models first, then more
# tasks), into one store; every step resumes. Usage: scripts/run_full_fit.sh STORE
set -uo pipefail
STORE=${1:-results/full}
CFG=configs/full-fit.toml
run() { echo "== $(date -u +%H:%M:%S) $*"; ${ICLWB:-iclwb} study full --config "$CFG" --store "$STORE" --findings '' --quiet "$@"; }
run --analyses head_scan
run --analyses circuit --tasks fv:present-past
run --analyses vectors --tasks fv:present-past,fv:singular-plural
run --analyses icl_vs_gd --models smollm2-135m
run --analyses circuit --tasks fv:singular-plural
run --analyses icl_vs_gd --models gemma3-270m
run --analyses vectors --tasks fv:capitalize,fv:country-capital
run --analyses circuit --tasks fv:country-capital,fv:capitalize
run --analyses vectors
echo "== $(date -u +%H:%M:%S) done"
