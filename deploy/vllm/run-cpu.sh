#!/usr/bin/env bash
# Start the CPU build of vLLM (from .venv-vllm, see setup-cpu.sh) on loopback with runtime LoRA
# loading. It must never listen publicly: runtime loading opens unauthenticated adapter routes.
#   deploy/vllm/run-cpu.sh MODEL_DIR [PORT]
# Env: MAX_LORAS (default 8; one slot goes to the service's all-zero "base" adapter),
#      MAX_LORA_RANK (8), DTYPE (float32: greedy outputs then match PEFT token for token),
#      MAX_MODEL_LEN (2048), VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, default 1), VLLM_VENV.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
MODEL="${1:?usage: run-cpu.sh MODEL_DIR [PORT]}"
PORT="${2:-8011}"
export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-nobind}"  # shared machines: no core pinning
export VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
  --model "$MODEL" --host 127.0.0.1 --port "$PORT" \
  --dtype "${DTYPE:-float32}" --max-model-len "${MAX_MODEL_LEN:-2048}" \
  --enable-lora --max-loras "${MAX_LORAS:-8}" --max-lora-rank "${MAX_LORA_RANK:-8}" \
  --max-cpu-loras "${MAX_CPU_LORAS:-${MAX_LORAS:-8}}" \
  "${@:3}"
