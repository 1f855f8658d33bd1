#!/usr/bin/env bash
# Fetch, here (network to PyPI), the wheels scripts/gpu_check.sh installs on a lent GPU machine (CPython 3.12,
# manylinux x86_64, no network) into .whl/ (git-ignored), then check them as the dry run does. About 48 MiB:
# name `.whl` in the device run's carry (64 MiB with the working tree). Binary wheels come from PyPI; packages
# PyPI has only as an sdist (iopath, fvcore, pytorchvideo) are built here into pure-Python wheels.
#   bash scripts/fetch_gpu_wheels.sh          (PYTHON=... to choose the interpreter that runs pip)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON:-python3}" "$ROOT/scripts/gpu_check.py" fetch --wheels "${GPU_CHECK_WHEELS:-$ROOT/.whl}" \
  --manifest "${GPU_CHECK_MANIFEST:-$ROOT/scripts/gpu_wheels.txt}" "$@"
