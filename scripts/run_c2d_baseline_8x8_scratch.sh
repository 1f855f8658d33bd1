#!/usr/bin/env bash
# Kinetics-400 recipe C2D_8x8_R50 (8 GPUs x 8 clips, then the 30-view test). One line:
#   DATA_DIR=/path/to/kinetics400 scripts/run_c2d_baseline_8x8_scratch.sh [KEY VALUE ...]
exec "$(dirname "${BASH_SOURCE[0]}")/train_kinetics.sh" configs/Kinetics/C2D_8x8_R50.yaml "$@"
