#!/usr/bin/env bash
# Train (then 30-view test) a Kinetics config with torchrun:
#   scripts/train_kinetics.sh configs/Kinetics/I3D_NLN_8x8_R50.yaml [KEY VALUE ...]
# Environment: GPUS, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, DATA_DIR, OUTPUT_DIR (see _launch.sh).
# TRAIN.BATCH_SIZE is global: keep 8 clips per GPU or scale SOLVER.BASE_LR linearly (docs/engine.md).
exec "$(dirname "${BASH_SOURCE[0]}")/_launch.sh" train "$@"
