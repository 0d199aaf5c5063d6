"""Tiny random-init Llama folders (student base and a sharper teacher) and a toy text task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.hypernet.conftest import _byte_tokenizer, tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

TOY_TEXTS = [
    "def restock_shelf(shelf, count):\n    shelf.items += count\n    return shelf\n\n"
    "def barcode_digits(code):\n    return [int(c) for c in code]\n\n"
    "class ShelfLabel:\n    def __init__(self, text):\n        self.text = text\n",
    "def warehouse_bin(row, col):\n    return row * 10 + col\n\n"
    "def restock_all(shelves):\n    for s in shelves:\n        restock_shelf(s, 1)\n    return shelves\n",
]


def save_tiny(path: Path, sharpen: float = 1.0, seed: int = 0) -> Path:
    """Save a tiny Llama (+ byte tokenizer); `sharpen` scales the final norm, i.e. the logits."""
    model = tiny_llama(seed)
    with torch.no_grad():
        model.model.norm.weight.mul_(sharpen)
    model.save_pretrained(path)
    _byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A sharper, different model: its distributions are far from the near-uniform random student.
    return save_tiny(tmp_path_factory.mktemp("teacher"), sharpen=8.0, seed=1)


def toy_config(student_dir: Path, teacher_dir: Path | None, out: Path, method: str = "opd", **kw) -> dict:
    """A small run config on the toy texts."""
    cfg = {
        "method": method, "name": f"toy-{method}", "out_dir": str(out),
        "student": {"base_model": str(student_dir), "rank": 4, "lora_alpha": 8.0},
        "teacher": {"model": str(teacher_dir) if teacher_dir else None, "context": False},
        "task": {"kind": "texts", "texts": TOY_TEXTS, "prompt_tokens": 24, "completion_tokens": 8,
                 "n_prompts": 16, "seq_len": 48, "eval_chunks": 4},
        "steps": 6, "batch_size": 4, "inner_steps": 1, "lr": 1e-2, "save_every": 3, "eval_every": 3,
        "threads": 1, "progress": False,
    }
    cfg.update(kw)
    return cfg
