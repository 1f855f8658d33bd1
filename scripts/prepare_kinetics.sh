#!/usr/bin/env bash
# Build video_nl lists for a Kinetics tree ROOT/{train,val}/{class name}/*.mp4, optionally re-encoding
# every video to short side 256: `bash scripts/prepare_kinetics.sh ROOT OUT [--resize] [--underscores]`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
exec "$PY" -m video_nl prepare-kinetics "$@"
