#!/usr/bin/env bash
# Visualise spacetime attention of a model's context blocks on one video (see docs/visualize.md).
# Usage: bash scripts/visualize_attention.sh CONFIG VIDEO [CHECKPOINT] [extra `video-nl visualize` options/overrides]
#   e.g. bash scripts/visualize_attention.sh configs/Kinetics/I3D_NLN_8x8_R50.yaml clip.mp4 model.pyth --block s4.nl1
# Without CHECKPOINT (or with "-") a freshly initialised model is used. Output: $OUT (default outputs/attention).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
if [ $# -lt 2 ]; then
  sed -n 2,5p "${BASH_SOURCE[0]}" >&2
  exit 2
fi
cfg="$1"; video="$2"; shift 2
ckpt=()
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
  [ "$1" != "-" ] && ckpt=(--checkpoint "$1")
  shift
fi
exec "$PY" -m video_nl visualize --cfg "$cfg" --video "$video" "${ckpt[@]}" --out "${OUT:-outputs/attention}" "$@"
