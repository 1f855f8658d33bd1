#!/usr/bin/env bash
# The test suite: creates .venv if missing, installs video_nl with its test extras, runs pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"`).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
exec "$PY" -m pytest -q "$@"
