#!/usr/bin/env bash
# Shared torchrun launcher of train_kinetics.sh / test_kinetics.sh: _launch.sh COMMAND CONFIG [ARGS ...].
# Environment: GPUS (per node, default: all visible), NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# MASTER_PORT (29500), DATA_DIR (data/kinetics400), OUTPUT_DIR (outputs/<config name>).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
COMMAND="$1"; shift
CONFIG="${1:?usage: scripts/${COMMAND}_kinetics.sh CONFIG [KEY VALUE ...]}"; shift
NAME="$(basename "$CONFIG" .yaml)"
GPUS="${GPUS:-$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
exec torchrun --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "$GPUS" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  -m video_nl "$COMMAND" --cfg "$CONFIG" DATA.PATH_TO_DATA_DIR "${DATA_DIR:-data/kinetics400}" \
  OUTPUT_DIR "${OUTPUT_DIR:-outputs/$NAME}" "$@"
