#!/usr/bin/env bash
# Run every benchmark script in sequence on an otherwise idle machine, logging each to $LOGS.
# PyKEEN (the `bench` extra) is optional: put it on PYTHONPATH or install it for the ratios.
# The quality benchmark compares PyKEEN against the imf runs given as arguments (e.g. the two runs
# `imf demo` prints), which it evaluates on the test split.
#   benchmarks/run_all.sh RUN_DIR BASELINE_RUN_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LOGS=${LOGS:-benchmarks/logs}
mkdir -p "$LOGS"
runs=()
for run in "$@"; do runs+=(--imf-run "$run"); done
( uname -srm; nproc; lscpu | grep -m1 "Model name" || true; $PY -c "import torch; print('torch', torch.__version__)" ) \
    > "$LOGS/machine.txt"
$PY benchmarks/bench_import.py --repeats 3 2>&1 | tee "$LOGS/import.txt"
$PY benchmarks/bench_encode.py 2>&1 | tee "$LOGS/encode.txt"
$PY benchmarks/bench_train.py --threads 2 --datasets countries-mm umls db15k fb15k-237 2>&1 | tee "$LOGS/train.txt"
$PY benchmarks/bench_eval.py --threads 1 --repeats 3 2>&1 | tee "$LOGS/eval.txt"
$PY benchmarks/bench_explore.py --threads 1 --queries 30 2>&1 | tee "$LOGS/explore.txt"
$PY benchmarks/bench_quality.py --threads 1 "${runs[@]}" 2>&1 | tee "$LOGS/quality.txt"
