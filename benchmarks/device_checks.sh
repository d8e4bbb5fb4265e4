#!/usr/bin/env bash
# The GPU checks of issue #10, as one short script for a lent device machine.
#
#   bash benchmarks/device_checks.sh            # on the GPU machine, from the repository root
#   DEVICE=cpu SIZE=tiny bash benchmarks/device_checks.sh   # dry run of the same commands on a CPU
#
# What it measures (every ratio against stock nnUNetTrainer measured in the same process):
#   1. bench_trainers.py at nnU-Net's default 3d_fullres network (patch 128^3, features
#      32-64-128-256-320-320, batch 2) under nnU-Net's autocast, eager: step time, FLOPs, peak
#      memory of every trainer (the scale trainers incl. ...Lite, the peers, ClsAux, SimSiam, CLEF).
#   2. bench_trainers.py --trainers clef (CLEF vs stock) with nnUNet_compile=true (target ratio <= 2.2).
# JSON results go to $OUT (the device tool's output folder) or ./device_checks_out, logs beside them.
# Expected to take a few minutes on an H100/H200 (estimate: stock's step was 77 ms there at 128^3;
# 12 rounds of 16 trainers, FLOP counts and compilation); SIZE=small (48 x 64 x 64, 16-128) takes under a minute.
#
# Environment: DEVICE (cuda), SIZE (default | small | tiny), STEPS (10), THREADS (8), PYTHON (python).
set -euo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-default}
STEPS=${STEPS:-10}
THREADS=${THREADS:-8}
PYTHON=${PYTHON:-python}
OUTDIR=${OUT:-./device_checks_out}

case "$SIZE" in
  default) PATCH="128 128 128"; FEATURES="32 64 128 256 320 320" ;;
  small)   PATCH="48 64 64";    FEATURES="16 32 64 128 128" ;;
  tiny)    PATCH="32 32 32";    FEATURES="8 16 32 32"; STEPS=1 ;;
  *) echo "SIZE must be default, small or tiny (got '$SIZE')" >&2; exit 2 ;;
esac
mkdir -p "$OUTDIR"

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import sys, torch, nnunetv2; gpu = torch.cuda.is_available(); \
print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if gpu else 'no GPU'); \
sys.exit(0 if gpu or sys.argv[1] != 'cuda' else 1)" "$DEVICE"; then
  echo "DEVICE=cuda but torch sees no GPU; run with DEVICE=cpu SIZE=tiny for a dry run" >&2
  exit 3
fi

run() {  # name, command...: log to $OUTDIR/name.log, keep going after a failure so that the rest still runs
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  if "$@" > "$OUTDIR/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - t0)) s"
  else
    echo "   FAILED (exit $?) after $((SECONDS - t0)) s; last lines:"; tail -n 20 "$OUTDIR/$name.log"
    FAILED=1
  fi
}
FAILED=0

# shellcheck disable=SC2206  # PATCH and FEATURES are word lists on purpose
COMMON=(--device "$DEVICE" --patch $PATCH --features $FEATURES --batch 2 --steps "$STEPS" --threads "$THREADS")
run trainers_eager env nnUNet_compile=false "$PYTHON" benchmarks/bench_trainers.py "${COMMON[@]}" --warmup 2 --no-rss \
  --json "$OUTDIR/trainers_eager.json"
if [ "$DEVICE" = cuda ]; then  # CLEF eager is a row of trainers_eager
  run clef_compiled env nnUNet_compile=true "$PYTHON" benchmarks/bench_trainers.py "${COMMON[@]}" --trainers clef \
    --warmup 3 --no-flops --no-rss --json "$OUTDIR/clef_compiled.json"
fi

echo "== tables"
for f in "$OUTDIR"/*.log; do echo "--- $(basename "$f")"; tail -n 40 "$f"; done
exit "$FAILED"
