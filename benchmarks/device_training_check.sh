#!/usr/bin/env bash
# A real-size training check for a lent GPU machine: nnU-Net's own commands at nnU-Net's own plan.
#
#   bash benchmarks/device_training_check.sh                       # on the GPU machine, from the repository root
#   DEVICE=cpu SIZE=tiny ITERATIONS=3 bash benchmarks/device_training_check.sh   # dry run on a CPU
#
# What it does, in a scratch folder ($WORK, default /tmp/nnunet_aux_device_check):
#   1. `nnunet_aux synth`: 8 training and 2 test cases of the demo regime at SIZE (default 128 x 192 x 192
#      voxels of 1.0 x 0.8 x 0.8 mm), scale labels from the package's decomposition;
#   2. `nnUNetv2_plan_and_preprocess -c 3d_fullres`: nnU-Net's default planner picks patch, network and batch;
#   3. `nnUNetv2_train ... -tr <T>_outcome` (benchmarks/outcome_trainers: the trainer unchanged, its length
#      from NNUNET_AUX_OUTCOME) for each of TRAINERS: 2 epochs of ITERATIONS iterations, real data loading
#      and augmentation, final validation without mirroring; eager (nnUNet_compile=false) unless COMPILE=1;
#   4. `nnUNetv2_predict` of the test cases with the last trainer's checkpoint, and `nnunet_aux evaluate`.
# It prints, per trainer, the second epoch's training-phase seconds per iteration (the first holds the
# warm-up) as a ratio against stock, and the test cases' scores; the JSON goes to
# $OUT/training_check.json (the device tool's output folder) or ./device_checks_out.
#
# Environment: DEVICE (cuda), SIZE (default | tiny), ITERATIONS (60), TRAINERS, NP (processes, 8), COMPILE (0).
set -euo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-default}
ITERATIONS=${ITERATIONS:-60}
TRAINERS=${TRAINERS:-"nnUNetTrainer nnUNetTrainerScaleContrastiveLite nnUNetTrainerScaleContrastive"}
NP=${NP:-8}
PYTHON=${PYTHON:-python}
OUTDIR=${OUT:-./device_checks_out}
WORK=${WORK:-/tmp/nnunet_aux_device_check}
case "$SIZE" in
  default) SHAPE="128 192 192" ;;
  tiny)    SHAPE="32 48 48" ;;
  *) echo "SIZE must be default or tiny (got '$SIZE')" >&2; exit 2 ;;
esac
for setting in ITERATIONS NP; do
  if ! [[ "${!setting}" =~ ^[1-9][0-9]*$ ]]; then echo "$setting must be a positive integer (got '${!setting}')" >&2; exit 2; fi
done
cd "$(dirname "$0")/.."
REPO=$PWD
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() or sys.argv[1] != 'cuda' else 1)" "$DEVICE"; then
  echo "DEVICE=cuda but torch sees no GPU; run with DEVICE=cpu SIZE=tiny ITERATIONS=3 for a dry run" >&2
  exit 3
fi
mkdir -p "$OUTDIR" "$WORK"
OUTDIR=$(cd "$OUTDIR" && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
export nnUNet_extTrainer="$REPO/nnunet_aux/trainer_path:$REPO/benchmarks/outcome_trainers"
export nnUNet_compile=$([ "${COMPILE:-0}" = 1 ] && echo true || echo false)
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-$NP}
DS=905
step() { echo "== $1 ($(date +%T))"; }
# nnU-Net's console scripts by their entry functions: works where nnU-Net is on PYTHONPATH without its scripts
nnunet() { local module=$1 entry=$2; shift 2; "$PYTHON" -c "import sys; from $module import $entry as f; sys.exit(f())" "$@"; }

step "synthetic data: 8 + 2 cases of $SHAPE voxels"
"$PYTHON" -m nnunet_aux.cli synth -d $DS -n 8 --n-test 2 --shape $SHAPE --name DeviceCheck --overwrite -np "$NP" \
  --no-progress > "$OUTDIR/synth.log" 2>&1
step "plan and preprocess (nnU-Net's default planner, 3d_fullres)"
nnunet nnunetv2.experiment_planning.plan_and_preprocess_entrypoints plan_and_preprocess_entry -d $DS -c 3d_fullres -np "$NP" \
  > "$OUTDIR/plan.log" 2>&1
"$PYTHON" - "$nnUNet_preprocessed" $DS <<'EOF'
import glob, json, sys
plans = json.load(open(glob.glob(f"{sys.argv[1]}/Dataset{sys.argv[2]}_*/nnUNetPlans.json")[0]))
c = plans["configurations"]["3d_fullres"]
print(f"   plan: patch {c['patch_size']}, batch {c['batch_size']}, features {c['architecture']['arch_kwargs']['features_per_stage']}")
EOF

for T in $TRAINERS; do
  step "train $T: 2 epochs x $ITERATIONS iterations on $DEVICE"
  NNUNET_AUX_OUTCOME="{\"num_epochs\": 2, \"num_iterations_per_epoch\": $ITERATIONS, \"num_val_iterations_per_epoch\": 5, \"seed\": 0}" \
    nnunet nnunetv2.run.run_training run_training_entry $DS 3d_fullres 0 -tr "${T}_outcome" -device "$DEVICE" \
    > "$OUTDIR/train_$T.log" 2>&1 || { echo "   FAILED; last lines:"; tail -n 25 "$OUTDIR/train_$T.log"; }
done

LAST=$(echo "$TRAINERS" | awk '{print $NF}')
step "predict the test cases with ${LAST}_outcome (no mirroring) and evaluate"
nnunet nnunetv2.inference.predict_from_raw_data predict_entry_point -d $DS -c 3d_fullres -f 0 -tr "${LAST}_outcome" \
  -i "$nnUNet_raw"/Dataset${DS}_DeviceCheck/imagesTs -o "$WORK/pred" --disable_tta -device "$DEVICE" \
  > "$OUTDIR/predict.log" 2>&1 && "$PYTHON" -m nnunet_aux.cli evaluate -ref "$nnUNet_raw"/Dataset${DS}_DeviceCheck/labelsTs -pred "$WORK/pred" \
  -o "$OUTDIR/evaluate.json" --no-progress \
  > "$OUTDIR/evaluate.log" 2>&1 || { echo "   FAILED; last lines:"; tail -n 25 "$OUTDIR/predict.log" "$OUTDIR/evaluate.log"; }

"$PYTHON" - "$nnUNet_results" "$OUTDIR" $TRAINERS <<'EOF'
import glob, json, re, sys
results, outdir, trainers = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = {}
for t in trainers:
    timing = glob.glob(f"{results}/*/{t}_outcome__nnUNetPlans__3d_fullres/fold_0/outcome_timing.json")
    if not timing:
        print(f"   {t}: no timing (training failed)"); continue
    epochs = json.load(open(timing[0]))["epochs"]
    last = epochs[max(epochs, key=int)]
    log = open(f"{outdir}/train_{t}.log", encoding="utf-8", errors="replace").read()
    rows[t] = {"s_per_iteration": last["train_s"] / last["iterations"], "iterations": last["iterations"],
               "final_validation_dice": [float(x) for x in re.findall(r"Mean Validation Dice:\s+([0-9.]+)", log)][-1:]}
stock = rows.get("nnUNetTrainer", {}).get("s_per_iteration")
for t, r in rows.items():
    ratio = f" = {r['s_per_iteration'] / stock:.2f} x stock" if stock else ""
    print(f"   {t}: {r['s_per_iteration'] * 1000:.0f} ms/iteration (epoch 2, training phase){ratio}")
json.dump(rows, open(f"{outdir}/training_check.json", "w"), indent=1)
EOF
tail -n 12 "$OUTDIR/evaluate.log" 2>/dev/null || true
