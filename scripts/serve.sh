#!/usr/bin/env bash
# Quick start, command 1: set up what serving needs (idempotent; no test extras), prepare the bundled base
# model once, start the API on the embedded defaults (SQLite, in-process cache, jobs and engine) at
# http://127.0.0.1:8000. Options go to `code2lora serve`: --host, --port, --log-level
# (or CODE2LORA_HOST / CODE2LORA_PORT). The first start takes minutes (README, "First start").
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh serve
VENV="${CODE2LORA_VENV:-.venv}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$VENV/bin/code2lora" models prepare
echo "[serve] starting the API (loads the base model and the hypernetwork; /healthz answers when ready)"
exec "$VENV/bin/code2lora" serve "$@"
