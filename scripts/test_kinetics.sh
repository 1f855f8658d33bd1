#!/usr/bin/env bash
# 30-view test of a Kinetics config with torchrun (every video scored once across GPUs):
#   scripts/test_kinetics.sh configs/Kinetics/I3D_NLN_8x8_R50.yaml [--checkpoint PATH] [KEY VALUE ...]
# Environment as scripts/train_kinetics.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/_launch.sh" test "$@"
