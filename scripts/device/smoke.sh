#!/bin/bash
# First device call (scripts/device/pack.sh built .dev/): stash part 1 of the model and the val adapters on the
# machine, then a short smoke sweep of every arm on a random-init model of the same shape (checks the CUDA path
# and measures seconds per step). Carry: .dev/part1 .dev/whl .dev/model-meta .dev/corpus-*.json.gz
# .dev/adapters-val .dev/scripts .dev/ctxfiles.tgz
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CODE2LORA_MODEL_CACHE=/root/mc
T0=$(date +%s)
mkdir -p /root/stash
cp .dev/part1 /root/stash/part1 && cp -r .dev/adapters-val /root/stash/ && echo stashed
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc; free -g | head -2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, transformers, gguf, sys, sacrebleu, matplotlib; print(sys.version.split()[0], torch.__version__, transformers.__version__, torch.cuda.is_available())"
mkdir -p /root/.cache/code2lora/training
tar xzf .dev/ctxfiles.tgz -C / && echo "context files: $(tar tzf .dev/ctxfiles.tgz | wc -l)"
for f in .dev/corpus-*.json.gz; do gunzip -c "$f" > "/root/.cache/code2lora/training/$(basename "$f" .gz)"; done
python3 - <<'EOF'
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
cfg = AutoConfig.from_pretrained(".dev/model-meta")
torch.manual_seed(0)
m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
m.save_pretrained("/root/mc/SmolLM2-135M-Instruct")
AutoTokenizer.from_pretrained(".dev/model-meta").save_pretrained("/root/mc/SmolLM2-135M-Instruct")
print("random model saved")
EOF
mkdir -p runs && rm -rf runs/generated && cp -r .dev/adapters-val runs/generated
echo "setup done at $(( $(date +%s) - T0 )) s"
python3 -m training.finetune.sweep --splits val --max-repos 2 --arms tropd,opd,sft_text,opd_full,tropd_slow,opd_short,kd_text,opd_base_teacher --set device=cuda --set steps=6 --set eval_every=3 --set save_every=3 --out /root/smoke --parallel 16 --deadline-s 100 --grace-s 20 > /root/smoke.log 2>&1
tail -25 /root/smoke.log
python3 - <<'EOF'
import json, glob, statistics
for f in sorted(glob.glob('/root/smoke/*/*/s0/*/metrics.jsonl')):
    recs = [json.loads(l) for l in open(f)]
    s = [r['sec'] for r in recs if 'sec' in r]
    r = [r['sec_rollout'] for r in recs if 'sec_rollout' in r]
    print(f.split('/')[-4], f.split('/')[-2], len(s), 'sec/step med %.3f' % statistics.median(s) if s else '-', 'rollout %.3f' % statistics.median(r) if r else '')
EOF
for f in $(grep -l Traceback /root/smoke/*.log | head -2); do echo "== $f"; tail -25 $f; done
grep -h "exit" /root/smoke.log | head -3
echo "call1 wall $(( $(date +%s) - T0 )) s"
