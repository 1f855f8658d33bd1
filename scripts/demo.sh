#!/usr/bin/env bash
# README command 1: on a clean clone, install, make the synthetic dataset, train a frame-level C2D and an
# I3D + non-local model, test both with 30 views (10 clips x 3 crops), draw the I3D-NL attention on one
# val video, print a results table and write outputs/demo/results.json. ~10 minutes on 2 CPU cores.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
DEMO=outputs/demo
DATA="$DEMO/synthetic"
MODELS=(C2D_tiny I3D_NLN_tiny)
start=$SECONDS
mkdir -p "$DEMO"
[ -f "$DATA/classnames.json" ] || video-nl make-synthetic "$DATA"
for m in "${MODELS[@]}"; do
  echo "[demo] training + 30-view test of $m"
  video-nl train --cfg "configs/Synthetic/$m.yaml" DATA.PATH_TO_DATA_DIR "$DATA" OUTPUT_DIR "$DEMO/$m" \
    TRAIN.AUTO_RESUME False | grep --line-buffered -v '"_type": "train_iter"'
done
VIDEO="$(head -n 1 "$DATA/val.csv" | cut -d' ' -f1)"
CHECKPOINT="$(ls "$DEMO/I3D_NLN_tiny/checkpoints"/checkpoint_epoch_*.pyth | sort | tail -n 1)"  # names sort in training order
video-nl visualize --cfg configs/Synthetic/I3D_NLN_tiny.yaml DATA.PATH_TO_DATA_DIR "$DATA" \
  --checkpoint "$CHECKPOINT" --video "$VIDEO" --out "$DEMO/attention"
"$PY" - "$DEMO" "${MODELS[@]}" <<'PY'
import json, sys
demo, models = sys.argv[1], sys.argv[2:]
results = {m: json.load(open(f"{demo}/{m}/test/summary.json")) for m in models}
with open(f"{demo}/results.json", "w") as f:
    json.dump(results, f, indent=2)
print(f"\n{'model':<16}{'top-1':>8}{'top-5':>8}{'mean-cls':>10}{'1-view':>8}{'views':>7}")
for m, s in results.items():
    print(f"{m:<16}{s['top1']:8.2f}{s['top5']:8.2f}{s['mean_class_acc']:10.2f}{s['first_view_top1']:8.2f}{s['views']:7d}")
PY
echo "[demo] results: $DEMO/results.json; attention pictures: $DEMO/attention; took $((SECONDS - start)) s"
