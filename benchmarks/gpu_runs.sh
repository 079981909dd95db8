#!/usr/bin/env bash
# The DB15K (and FB15k-237) benchmark runs of issues 11 and 13 as one prepared script for a lent GPU
# machine (the `device` tool: a bare machine whose python3 holds PyTorch, no network, no ../shared,
# at most 64 MiB carried and 8 files back). Two steps:
#
#   benchmarks/gpu_runs.sh prepare [db15k|fb15k-237]   # here, on the CPU machine, once
#       Imports the dataset from ../shared into .gpu/home (git-ignored), encodes its text with the
#       bundled MiniLM, and downloads the pure-Python wheels the GPU image lacks into .gpu/whl.
#       DB15K's store and features are about 29 MB, FB15k-237's about 44 MB: carry one at a time.
#
#   benchmarks/gpu_runs.sh run [db15k|fb15k-237] [TRAIN_SECONDS]   # on the device, carry [".gpu"]
#       Installs the wheels into /tmp/site, runs the CUDA tests (no host synchronisation in the step,
#       tests/models/test_cuda.py), then trains the structure-only preset, the text-only row (the
#       structure + text preset with --modalities text) and the structure + text preset side by side
#       on the one GPU for about TRAIN_SECONDS (default 360) each (VARIANTS="structure text full" and
#       SEEDS="1" choose them; every seed of every variant runs at once; STAGGER=S starts the first run S
#       seconds before the others, so that its first epochs are timed alone; PROFILE=1 first profiles
#       the training step with benchmarks/profile_step.py, about a minute). The trainings stop on
#       their own (early stopping on valid) or at the first epoch end past the budget (--max-minutes:
#       that epoch is evaluated and last.pt written, so the run is resumable); best.pt is the epoch
#       chosen on valid. Then `imf eval` reads valid (per relation) and, once, test for each run (all of
#       it, and with --drop-overlap its triples in neither train nor valid), and
#       everything small comes back as one archive: $OUT/<dataset>-gpu.tar.gz holding each run's
#       config.yaml, trace.jsonl and metrics-*.json, the logs and nvidia-smi's view.
#
#   Device call (one, about 8 minutes of the 15-minute budget with the machine's start):
#     run(command="bash benchmarks/gpu_runs.sh run db15k 360", carry=[".gpu"], timeout_s=590)
#   Used on 2026-12-04 (docs/benchmarks.md, "DB15K structure + text on an H200, three seeds"): 556 s,
#     run(command='VARIANTS="full" SEEDS="1 2 3" STAGGER=40 bash benchmarks/gpu_runs.sh run db15k 400', ...)
#   and, with the CUDA-graph step, 'EAGER=3 VARIANTS="full" SEEDS="1 2 3" STAGGER=30 ... run db15k 400', which
#   hung on a bare `wait` for the GPU sampler until the call's limit (fixed; docs/benchmarks.md, "The
#   training step as one CUDA graph"). At 3.3 s per graphed epoch, a converged DB15K fused run (about
#   230 epochs) needs about 13 minutes alone: more than one call. Suggested next call: first
#   'PROFILE=1 VARIANTS="full" SEEDS="1" bash benchmarks/gpu_runs.sh run db15k 300' (about 7 minutes:
#   whether the padding fix of models/graphs.py made the step GPU-light, and how far one seed gets);
#   with epochs near 1 s, SEEDS="1 2 3" side by side in the budget that is left.
#   The trainings skip the placement of unseen entities (--no-place-unseen: a CPU fit of minutes on
#   DB15K; a service fits it on first use). EAGER=N first trains the structure + text preset with the
#   eager step (train.cuda_graphs false) for N epochs alone, beside the CUDA tests: the same machine's
#   figure to compare the CUDA-graph step with. nvidia-smi samples the GPU's use every 5 s meanwhile.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
dataset=${2:-db15k}
case "$dataset" in
  db15k | fb15k-237) ;;
  *) echo "gpu_runs.sh: dataset must be db15k or fb15k-237, got '$dataset'" >&2; exit 2 ;;
esac
GPU_DIR=.gpu
HOME_DIR=$GPU_DIR/home
# Pure-Python packages imf needs that the GPU image lacks or may hold in older versions than pyproject
# asks; `prepare` takes the versions installed here, so the device runs what the tests ran.
WHEEL_NAMES=(sqlite-utils sqlite-fts4 click-default-group platformdirs typer rich click shellingham annotated-doc
  markdown-it-py mdurl pygments python-dateutil tabulate pluggy pydantic pydantic-core typing-inspection annotated-types
  typing-extensions tzdata)
# What those packages require that the GPU image holds (KINDS.md's package list): not carried.
# tests/test_gpu_script.py checks that every requirement of a carried package is in one list or the other.
IMAGE_PACKAGES=(pip)

prepare() {
  local py=${PY:-.venv/bin/python} imf=${IMF:-.venv/bin/imf}
  [ -x "$imf" ] || { echo "gpu_runs.sh prepare: run the README's install first ($imf is missing)" >&2; exit 2; }
  [ -d "../shared/datasets/$dataset" ] || { echo "gpu_runs.sh prepare: ../shared/datasets/$dataset is absent" >&2; exit 2; }
  grep -qxF "/$GPU_DIR/" .gitignore || { echo "gpu_runs.sh prepare: /$GPU_DIR/ must be in .gitignore" >&2; exit 2; }
  rm -rf "$HOME_DIR/datasets"
  mkdir -p "$HOME_DIR"
  IMF_HOME=$HOME_DIR "$imf" import "../shared/datasets/$dataset" --name "$dataset" || exit 1
  IMF_HOME=$HOME_DIR "$imf" encode "$dataset" --modality text --threads "${THREADS:-2}" --no-progress || exit 1
  local wheels=() name version
  for name in "${WHEEL_NAMES[@]}"; do
    version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || exit 1
    wheels+=("$name==$version")
  done
  rm -rf "$GPU_DIR/whl" && mkdir -p "$GPU_DIR/whl"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$GPU_DIR/whl" "${wheels[@]}" || exit 1
  du -sh "$GPU_DIR"
  echo "Prepared $GPU_DIR for $dataset. On the device: bash benchmarks/gpu_runs.sh run $dataset 360 (carry .gpu)"
}

run() {
  # DEVICE=cpu PYTHON=.venv/bin/python WHEELS=0 TRAIN_ARGS="--epochs 1 --eval-every 1 --dim 16" rehearse
  # the flow on the CPU machine (WHEELS=0: the venv has the packages, and the wheels are for Python 3.12);
  # TRAIN_ARGS is added to every training's options.
  local seconds=${3:-360} out=${OUT:-/tmp/gpu-out} work=${WORK:-/tmp/gpu-runs} device=${DEVICE:-cuda} py=${PYTHON:-python3}
  local variant seed
  for variant in ${VARIANTS:-structure text full}; do
    case "$variant" in
      structure | text | full) ;;
      *) echo "gpu_runs.sh: VARIANTS holds structure, text and full, got '$variant'" >&2; exit 2 ;;
    esac
  done
  for seed in ${SEEDS:-1}; do
    [[ "$seed" =~ ^[0-9]+$ ]] || { echo "gpu_runs.sh: SEEDS holds integers, got '$seed'" >&2; exit 2; }
  done
  rm -rf "$work"
  mkdir -p "$out" "$work/logs"
  if [ "${WHEELS:-1}" = 1 ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$GPU_DIR"/whl/*.whl || exit 1
  fi
  export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 IMF_HOME=$PWD/$HOME_DIR
  local imf=("$py" -m imf_cli)
  {
    nvidia-smi
    "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  } > "$work/logs/machine.txt" 2>&1
  # PROFILE=1: first profile 20 steps of the structure + text preset's step (benchmarks/profile_step.py:
  # host and device time per operator, kernels per step), alone on the GPU, into logs/profile.txt.
  # The loss's padded index_put_ by padding layout (logs/bench-padding.txt), the graphed step (replays:
  # the kernels' device time) into logs/profile.txt, then the eager step (every operator's host and
  # device time) into logs/profile-eager.txt.
  if [ "${PROFILE:-0}" = 1 ]; then
    timeout 60 "$py" benchmarks/bench_padding.py --device "$device" > "$work/logs/bench-padding.txt" 2>&1
    local flag log
    for flag in "" --eager; do
      log=$work/logs/profile${flag:+-eager}.txt
      timeout 150 "$py" benchmarks/profile_step.py "$dataset" --config "imf_cli/presets/$dataset.yaml" --device "$device" \
        $flag > "$log" 2>&1
      echo "profile_step: exit $?" >> "$log"
    done
  fi
  # STAGGER=S: the first run trains alone for S seconds before the others start (its first epochs are
  # then timed alone; the rest side by side), and it gets S seconds more budget so all end together.
  local stagger=${STAGGER:-0} first=1 budget
  [[ "$stagger" =~ ^[0-9]+$ ]] || { echo "gpu_runs.sh: STAGGER is whole seconds, got '$stagger'" >&2; exit 2; }
  local eager=${EAGER:-0}
  [[ "$eager" =~ ^[0-9]+$ ]] || { echo "gpu_runs.sh: EAGER is whole epochs, got '$eager'" >&2; exit 2; }
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$work/logs/gpu-use.csv" 2>&1 &
  local sampler=$!
  local tests=
  if [ "$stagger" = 0 ] || [ "$eager" != 0 ]; then
    (timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/models/test_cuda.py > "$work/logs/test_cuda.txt" 2>&1
      echo "test_cuda: exit $?" >> "$work/logs/test_cuda.txt") &
    tests=$!
  fi
  if [ "$eager" != 0 ]; then  # the eager step, alone on the GPU but for the CUDA tests
    "$py" -c "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); d['train']['cuda_graphs'] = False
yaml.safe_dump(d, open(sys.argv[2], 'w'))" "imf_cli/presets/$dataset.yaml" "$work/eager.yaml" || exit 1
    timeout 240 "${imf[@]}" train "$dataset" --config "$work/eager.yaml" --seed 1 --device "$device" --epochs "$eager" \
      --eval-every "$eager" --no-place-unseen --no-progress --run-dir "$work/$dataset-eager-s1" ${TRAIN_ARGS:-} \
      > "$work/logs/train-$dataset-eager-s1.txt" 2>&1
    echo "$dataset-eager-s1: train exit $?" >> "$work/logs/exits.txt"
    [ -n "$tests" ] && wait "$tests"  # the CUDA tests (not the sampler): the graphed runs are timed without them
  fi

  local pids=() names=() name
  for variant in ${VARIANTS:-structure text full}; do
    local preset=imf_cli/presets/$dataset.yaml extra=()
    case "$variant" in
      structure) preset=imf_cli/presets/$dataset-structure.yaml ;;
      text) extra=(--modalities text) ;;  # the text-only row: the full preset with the other branches off
    esac
    for seed in ${SEEDS:-1}; do
      name=$dataset-$variant-s$seed
      budget=$seconds
      [ "$first" = 1 ] && budget=$((seconds + stagger))
      # --max-minutes ends the run at an epoch's end, evaluated and resumable; timeout is only a safety net.
      timeout -s TERM $((budget + 120)) "${imf[@]}" train "$dataset" --config "$preset" "${extra[@]}" --seed "$seed" \
        --device "$device" --max-minutes "$(awk "BEGIN { print $budget / 60 }")" --no-place-unseen --no-progress \
        --run-dir "$work/$name" ${TRAIN_ARGS:-} > "$work/logs/train-$name.txt" 2>&1 &
      pids+=($!) names+=("$name")
      if [ "$first" = 1 ] && [ "$stagger" != 0 ]; then
        sleep "$stagger"
        echo "the others started $stagger s after $name" > "$work/logs/stagger.txt"
        if [ "$eager" = 0 ]; then
          (timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/models/test_cuda.py > "$work/logs/test_cuda.txt" 2>&1
            echo "test_cuda: exit $?" >> "$work/logs/test_cuda.txt") &
        fi
      fi
      first=0
    done
  done
  local i
  for i in "${!pids[@]}"; do wait "${pids[$i]}"; echo "${names[$i]}: train exit $?" >> "$work/logs/exits.txt"; done
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null

  wait  # the CUDA tests, when they ran beside the trainings
  for name in "${names[@]}"; do  # each run's evaluations, the runs side by side
    local run_dir=$work/$name
    [ -f "$run_dir/best.pt" ] || continue
    ("${imf[@]}" eval "$run_dir" --split valid --per-relation --device "$device" --no-progress \
      > "$work/logs/eval-valid-$name.txt" 2>&1
    "${imf[@]}" eval "$run_dir" --split test --device "$device" --no-progress > "$work/logs/eval-test-$name.txt" 2>&1
    # the same test read on its triples in neither train nor valid (DB15K's split leaks 14 %)
    "${imf[@]}" eval "$run_dir" --split test --drop-overlap --device "$device" --no-progress \
      > "$work/logs/eval-test-no-overlap-$name.txt" 2>&1) &
  done
  wait
  tar czf "$out/$dataset-gpu.tar.gz" -C "$work" logs \
    $(cd "$work" && ls -d "$dataset"-*-s*/{config.yaml,trace.jsonl,metrics-*.json} 2>/dev/null)
  cat "$work"/logs/exits.txt "$work"/logs/test_cuda.txt "$work"/logs/bench-padding.txt 2>/dev/null | tail -36
  for name in "$dataset-eager-s1" "${names[@]}"; do  # epochs, median seconds per training epoch, last valid fused MRR
    [ -f "$work/$name/trace.jsonl" ] && "$py" -c "import json, statistics, sys
t = [json.loads(l) for l in open(sys.argv[1])]
v = [r for r in t if 'valid' in r]
print(sys.argv[2], 'epochs', len(t), 'graph', t[-1].get('cuda_graph'), 'median train s', round(statistics.median(r['seconds']['train'] for r in t), 3),
      'first', [round(r['seconds']['train'], 2) for r in t[:4]], 'valid fused', v and (v[-1]['epoch'], round(v[-1]['valid']['fused']['mrr'], 4)))" \
      "$work/$name/trace.jsonl" "$name"
  done
  tail -n 3 "$work"/logs/eval-test-*.txt 2>/dev/null
}

case "$mode" in
  prepare) prepare ;;
  run) run "$@" ;;
  *) echo "usage: benchmarks/gpu_runs.sh prepare|run [db15k|fb15k-237] [TRAIN_SECONDS]" >&2; exit 2 ;;
esac
