#!/usr/bin/env bash
# Kinetics-400 recipe I3D_NLN_8x8_R50_IN1K (8 GPUs x 8 clips, then the 30-view test). One line:
#   DATA_DIR=/path/to/kinetics400 scripts/run_i3d_nlnet_8x8.sh [KEY VALUE ...]
exec "$(dirname "${BASH_SOURCE[0]}")/train_kinetics.sh" configs/Kinetics/I3D_NLN_8x8_R50_IN1K.yaml "$@"
