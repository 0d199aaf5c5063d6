#!/usr/bin/env bash
# Quick start, command 2: set up (idempotent) and run the whole test suite. .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
