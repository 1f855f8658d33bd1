#!/usr/bin/env bash
# Shared torchrun launcher of train_kinetics.sh / test_kinetics.sh: _launch.sh COMMAND CONFIG [ARGS ...].
# Environment: GPUS (per node, default: all visible), NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# MASTER_PORT (29500), DATA_DIR (data/kinetics400), OUTPUT_DIR (outputs/<config name>),
# RDZV_BACKEND (static: ranks follow NODE_RANK; c10d: dynamic rendezvous at MASTER_ADDR:MASTER_PORT, NODE_RANK
# unused, RDZV_ID names the job; use it for elastic multi-node runs), MAX_RESTARTS (0; N: after a worker fails,
# restart all workers up to N times, they auto-resume from the newest checkpoint).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
COMMAND="$1"; shift
CONFIG="${1:?usage: scripts/${COMMAND}_kinetics.sh CONFIG [KEY VALUE ...]}"; shift
NAME="$(basename "$CONFIG" .yaml)"
GPUS="${GPUS:-$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
# A fresh rendezvous store for each elastic restart (torchrun's shared one keeps the killed attempt's keys).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE="${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}"
if [ "${RDZV_BACKEND:-static}" = c10d ]; then
  RDZV=(--rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT:-29500}" --rdzv_id "${RDZV_ID:-$NAME}")
else
  RDZV=(--node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}")
fi
exec torchrun --nnodes "${NNODES:-1}" "${RDZV[@]}" --nproc_per_node "$GPUS" --max_restarts "${MAX_RESTARTS:-0}" \
  -m video_nl "$COMMAND" --cfg "$CONFIG" DATA.PATH_TO_DATA_DIR "${DATA_DIR:-data/kinetics400}" \
  OUTPUT_DIR "${OUTPUT_DIR:-outputs/$NAME}" "$@"
