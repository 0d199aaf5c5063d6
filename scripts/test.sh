#!/usr/bin/env bash
# Quick start, command 2: set up with the dev/test extras (idempotent) and run the whole test suite.
# .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh dev
VENV="${CODE2LORA_VENV:-.venv}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$VENV/bin/python" -m pytest "$@"
