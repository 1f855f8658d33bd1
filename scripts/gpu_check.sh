#!/usr/bin/env bash
# The GPU check: one command on a lent GPU machine, about 6 minutes including set-up (docs/performance.md, "GPU checks").
#
#   bash scripts/gpu_check.sh [--dry-run] [--steps tests,bench,train]
#
# set-up  installs the packages the machine lacks from the wheels in .whl/ (scripts/gpu_wheels.txt; fetch them
#         here with `bash scripts/fetch_gpu_wheels.sh` and name .whl in the run's carry) into $GPU_CHECK_SITE, and
#         puts that folder and this tree on PYTHONPATH: torch and the image's own packages stay as they are.
# tests   pytest -m cuda (tests/cuda);
# bench   video-nl bench nonlocal, then bench model, both --device cuda --json;
# train   make-synthetic, then train configs/Synthetic/I3D_NLN_tiny.yaml with DEVICE cuda and its 30-view test.
# Each step has a time limit (GPU_CHECK_LIMIT_TESTS, _NONLOCAL, _MODEL, _SYNTHETIC, _TRAIN seconds) inside an
# overall budget (GPU_CHECK_BUDGET_S, default 420 s); a step that runs out is stopped and recorded, the rest go on.
# Results land in $OUT (default outputs/gpu_check), 8 files: summary.json (machine, steps, test counts, headline
# bench rows against the targets, synthetic test accuracy), gpu_check.log, cuda_tests.log, cuda_tests.xml,
# bench.jsonl, bench.log, train.log, artifacts.tar.gz (train logs and test outputs, bench tables and plots).
#
# --dry-run needs no GPU: the set-up checks for the GPU machine (a wheel for every package, one version each,
# tags for CPython 3.12 manylinux x86_64, their dependencies met, wheels + tree within the 64 MiB carry), installs
# the wheels into a temporary folder and imports those this Python can load, collects the cuda tests, and prints
# each step's command without running it.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/outputs/gpu_check}"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
MANIFEST="${GPU_CHECK_MANIFEST:-$ROOT/scripts/gpu_wheels.txt}"
BUDGET="${GPU_CHECK_BUDGET_S:-420}"
DRY=0
STEPS="tests,bench,train"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --steps) STEPS="$2"; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

START=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
SITE="${GPU_CHECK_SITE:-$WORK/site}"
mkdir -p "$OUT"
rm -f "$OUT"/{summary.json,gpu_check.log,cuda_tests.log,cuda_tests.xml,bench.jsonl,bench.log,train.log,artifacts.tar.gz}
say() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }
elapsed() { echo $(( $(date +%s) - START )); }
wants() { [[ ",$STEPS," == *",$1,"* ]]; }
MODE=$([ $DRY = 1 ] && echo dry-run || echo run)

summarise() {
  "$PY" scripts/gpu_check.py summary --out "$OUT" --work "$WORK" --mode "$MODE" --budget-s "$BUDGET" \
    --elapsed-s "$(elapsed)" >/dev/null || say "could not write summary.json"
}

record() {  # name status rc seconds command...
  local name=$1 status=$2 rc=$3 secs=$4; shift 4
  "$PY" -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "status": sys.argv[2], "rc": int(sys.argv[3]),
"seconds": int(sys.argv[4]), "command": " ".join(sys.argv[5:])}))' "$name" "$status" "$rc" "$secs" "$@" \
    >>"$WORK/steps.jsonl"
  summarise
}

step() {  # name limit log command...: runs the command within min(limit, what is left of the budget)
  local name=$1 limit=$2 log=$3; shift 3
  if [ $DRY = 1 ]; then
    say "$name (limit ${limit}s, log $(basename "$log")): would run: $*"
    record "$name" dry-run 0 0 "$@"
    return 0
  fi
  local left=$(( BUDGET - $(elapsed) ))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    say "$name: skipped, ${left}s of the ${BUDGET}s budget left"
    record "$name" skipped -1 0 "$@"
    return 1
  fi
  say "$name (limit ${limit}s): $*"
  echo "### $name: $*" >>"$log"
  local t0=$(date +%s) rc status
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  say "$name: $status (exit $rc) in $(( $(date +%s) - t0 ))s"
  record "$name" "$status" "$rc" $(( $(date +%s) - t0 )) "$@"
  return $rc
}

main() {
# ------------------------------------------------------------------------------------------------ set-up
say "mode $MODE, steps $STEPS, budget ${BUDGET}s, output $OUT, scratch $WORK"
"$PY" scripts/gpu_check.py env --report "$WORK/env.json" || { say "python/torch unusable: $PY"; return 2; }
SETUP_ARGS=(install --manifest "$MANIFEST" --wheels "$WHEELS" --target "$SITE" --report "$WORK/setup.json")
[ $DRY = 1 ] && SETUP_ARGS+=(--all)
if ! "$PY" scripts/gpu_check.py "${SETUP_ARGS[@]}"; then
  say "set-up failed: see the problems above"
  record setup failed 2 "$(elapsed)" "$PY" scripts/gpu_check.py "${SETUP_ARGS[@]}"
  return 2
fi
record setup ok 0 "$(elapsed)" "$PY" scripts/gpu_check.py "${SETUP_ARGS[@]}"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONUNBUFFERED=1
if [ $DRY = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  say "torch sees no CUDA GPU here: run with --dry-run on a machine without one"
  return 2
fi
WORKERS=$(( $(nproc) < 8 ? $(nproc) : 8 ))

# ------------------------------------------------------------------------------------------------ steps
VNL=("$PY" -m video_nl)
if wants tests; then
  # -v: a line per test as it ends, so the log tells how far a run got if the step's limit stops it
  PYTEST=("$PY" -m pytest -m cuda -p no:cacheprovider -v -rfEs tests)
  "$PY" -c 'import pytest_timeout' 2>/dev/null && PYTEST+=(--timeout=100)
  if [ $DRY = 1 ]; then
    say "tests: collecting"
    "${PYTEST[@]}" --collect-only -q -o addopts="" | tail -1
  fi
  step tests "${GPU_CHECK_LIMIT_TESTS:-200}" "$OUT/cuda_tests.log" "${PYTEST[@]}" --junitxml="$OUT/cuda_tests.xml"
fi
if wants bench; then
  for which in nonlocal model; do
    limit_var=GPU_CHECK_LIMIT_${which^^}
    step "bench_$which" "${!limit_var:-$([ $which = model ] && echo 150 || echo 60)}" "$OUT/bench.log" \
      "${VNL[@]}" bench "$which" --device cuda --json --out "$WORK/bench_$which"
    [ -f "$WORK/bench_$which/bench.jsonl" ] && cat "$WORK/bench_$which/bench.jsonl" >>"$OUT/bench.jsonl"
  done
fi
if wants train; then
  step synthetic "${GPU_CHECK_LIMIT_SYNTHETIC:-45}" "$OUT/train.log" \
    "${VNL[@]}" make-synthetic "$WORK/synthetic" --workers "$WORKERS"
  step train "${GPU_CHECK_LIMIT_TRAIN:-150}" "$OUT/train.log" \
    "${VNL[@]}" train --cfg configs/Synthetic/I3D_NLN_tiny.yaml DEVICE cuda DATA.PATH_TO_DATA_DIR "$WORK/synthetic" \
    OUTPUT_DIR "$WORK/train" DATA_LOADER.NUM_WORKERS "$WORKERS"
fi

# ------------------------------------------------------------------------------------------------ results
nvidia-smi >"$WORK/nvidia-smi.txt" 2>&1
(cd "$WORK" && tar -czf "$OUT/artifacts.tar.gz" --ignore-failed-read env.json setup.json steps.jsonl nvidia-smi.txt \
  $(ls -d bench_*/bench.md bench_*/*.png train/log.jsonl train/config.yaml train/test 2>/dev/null)) \
  || say "artifacts.tar.gz incomplete"
summarise
say "done in $(elapsed)s; results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
"$PY" -c 'import json, sys; s = json.load(open(sys.argv[1])); print(json.dumps({k: s[k] for k in
("mode", "ok", "cuda_tests", "synthetic_test", "bench_headline")}, indent=1)); sys.exit(0 if s["ok"] else 1)' \
  "$OUT/summary.json"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
