"""sha256 over the tensors (name, dtype, bytes) of a model folder's safetensors: the same model on two machines."""

import hashlib
import sys
from pathlib import Path

import torch
from safetensors import safe_open

digest = hashlib.sha256()
for file in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    with safe_open(str(file), framework="pt") as fh:
        for key in sorted(fh.keys()):
            tensor = fh.get_tensor(key).contiguous()
            digest.update(key.encode() + str(tensor.dtype).encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
print(digest.hexdigest())
