"""Tiny random-init Llama (hidden 64, 2 layers, head_dim 16) and a byte-level tokenizer, saved to a tmp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit.models import byte_tokenizer as _byte_tokenizer
from testkit.models import tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama folder with its tokenizer (a stand-in for any HF causal-LM path)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(path)
    _byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama of another shape (3 layers), for checkpoint mismatch tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama-3")
    config = LlamaConfig(
        vocab_size=258, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    _byte_tokenizer().save_pretrained(path)
    return path


class FakeContext:
    """Duck-typed RepoContext: the methods `hypernet.pipeline` uses."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        import hashlib

        self.digest = hashlib.sha256("\n".join(names).encode()).hexdigest()

    def render(self, budget_tokens: int = 2048, count_tokens=None) -> str:
        return "\n".join(f"def {n}(x, y): ...  # {n} returns the {n} of x" for n in self.names)

    def render_items(self, max_items: int = 256) -> list[str]:
        return [f"function {n}(x, y) in module {n}_mod" for n in self.names][:max_items]

    def defined_identifiers(self) -> set[str]:
        return set(self.names)


@pytest.fixture
def repo_a() -> FakeContext:
    return FakeContext(["parse_invoice", "InvoiceLine", "total_with_vat", "vat_rate"])


@pytest.fixture
def repo_b() -> FakeContext:
    return FakeContext(["render_sprite", "SpriteSheet", "blit_layer", "frame_index", "palette"])
