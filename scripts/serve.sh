#!/usr/bin/env bash
# Quick start, command 1: set up (idempotent), prepare the bundled base model once, start the API on
# the embedded defaults (SQLite, in-process cache, jobs and engine) at http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/code2lora models prepare
exec .venv/bin/code2lora serve "$@"
