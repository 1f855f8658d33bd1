# Sourced by the scripts in scripts/: creates .venv if missing and installs video_nl into it (with the
# test and export extras: pytest, PyTorchVideo, ONNX/onnxruntime).
# torch/torchvision are pinned as a pair (other pairs fail to import together on our machines).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[video_nl] creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.video_nl_installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "[video_nl] installing dependencies into $VENV (first run: a few minutes)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
  "$PY" -m pip install -q -e "$ROOT[test,export]"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
