"""Shared by the benchmarks: machine description and writing one section of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"


def machine() -> str:
    """CPU model, core count and Python/torch versions, for the record."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_v = torch.__version__
    except ImportError:
        torch_v = "n/a"
    load = os.getloadavg()[0]
    # The machines here are shared: the load average says how much of the CPU the run really had.
    return (f"{cpu}, {os.cpu_count()} cores (load average {load:.1f} at the end of the run), "
            f"Python {platform.python_version()}, torch {torch_v}")


def write_section(heading: str, text: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) only the section that starts with `heading` (a `## ` line)."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = doc.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        doc = doc.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        rest = "".join(lines[end:])
        doc = "".join(lines[:start]) + text.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)


def tiny_model(dest: Path) -> tuple[Path, Path]:
    """A tiny random Llama folder with a byte tokenizer, and a hypernet checkpoint whose B head is off zero
    (so adapters differ per repository): the service itself, without the cost of a real model."""
    import torch

    from hypernet.checkpoint import save_checkpoint
    from hypernet.generator import AdapterGenerator
    from tests.hypernet.conftest import _byte_tokenizer, tiny_llama

    model_dir = dest / "tiny-model"
    tiny_llama(0).save_pretrained(model_dir)
    _byte_tokenizer().save_pretrained(model_dir)
    gen = AdapterGenerator.load(None, model_dir)
    with torch.no_grad():
        torch.manual_seed(1)
        gen.hypernet.head_b.weight.normal_(0.0, 0.5)
        gen.hypernet.head_b.bias.normal_(0.0, 0.5)
    ckpt = dest / "hypernet.safetensors"
    save_checkpoint(gen.hypernet, ckpt)
    return model_dir, ckpt
