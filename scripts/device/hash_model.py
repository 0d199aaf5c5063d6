import hashlib, sys
from pathlib import Path
from safetensors import safe_open
d = Path(sys.argv[1])
h = hashlib.sha256()
for f in sorted(d.glob("*.safetensors")):
    with safe_open(str(f), framework="pt") as fh:
        for k in sorted(fh.keys()):
            t = fh.get_tensor(k)
            h.update(k.encode()); h.update(str(t.dtype).encode()); h.update(t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
print(h.hexdigest())
