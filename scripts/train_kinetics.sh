#!/usr/bin/env bash
# Train (then 30-view test) a Kinetics config with torchrun:
#   scripts/train_kinetics.sh configs/Kinetics/I3D_NLN_8x8_R50.yaml [KEY VALUE ...]
# Environment: GPUS, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, RDZV_BACKEND, RDZV_ID, MAX_RESTARTS, DATA_DIR,
# OUTPUT_DIR (see _launch.sh).
# TRAIN.BATCH_SIZE is global: keep 8 clips per GPU or scale SOLVER.BASE_LR linearly (docs/engine.md).
#
# Two nodes (OUTPUT_DIR and DATA_DIR on a filesystem both share; run on each node, host0 reachable from both):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 MASTER_PORT=29500 GPUS=8 scripts/train_kinetics.sh CONFIG   # on host0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=host0 MASTER_PORT=29500 GPUS=8 scripts/train_kinetics.sh CONFIG   # on host1
# or with a c10d rendezvous (no node ranks; ranks are assigned when the nodes meet):
#   NNODES=2 RDZV_BACKEND=c10d MASTER_ADDR=host0 MASTER_PORT=29500 GPUS=8 scripts/train_kinetics.sh CONFIG
# Elastic restarts: MAX_RESTARTS=3 restarts all workers (on every node) after one fails, up to 3 times; they resume
# from the newest checkpoint rank 0 sees (add TRAIN.CHECKPOINT_PERIOD_ITERS N to lose at most N iterations). On
# CPU with TRAIN.DETERMINISTIC True the final weights equal an uninterrupted run's bitwise (tests/test_distributed.py
# runs both cases on one machine). SLURM: docs/engine.md, "Multi-node, elastic and SLURM".
exec "$(dirname "${BASH_SOURCE[0]}")/_launch.sh" train "$@"
