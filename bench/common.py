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


def publish(heading: str, lines: list[str], write: bool = True) -> str:
    """Print a benchmark's section (`lines`, the first being `heading`) and, with `write`, put it in
    docs/BENCHMARKS.md in place of the old one; returns the text."""
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        write_section(heading, text)
    return text
