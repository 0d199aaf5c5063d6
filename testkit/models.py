"""Tiny models for tests and benchmarks: a byte tokenizer, a random Llama, a perturbed hypernetwork checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch


def byte_tokenizer():
    """A byte-level BPE tokenizer without merges (258 ids: 256 bytes, <s>, </s>): no files, no download."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    vocab["<s>"], vocab["</s>"] = len(vocab), len(vocab) + 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")


def tiny_llama(seed: int = 0):
    """A random-init LlamaForCausalLM small enough for millisecond forwards."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=258,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=257,
    )
    return LlamaForCausalLM(config).eval()


def tiny_model(dest: Path) -> tuple[Path, Path]:
    """A tiny random Llama folder with a byte tokenizer, and a hypernet checkpoint whose B head is off zero
    (so adapters differ per repository): the service itself, without the cost of a real model."""
    import torch

    from hypernet.checkpoint import save_checkpoint
    from hypernet.generator import AdapterGenerator

    model_dir = dest / "tiny-model"
    tiny_llama(0).save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    gen = AdapterGenerator.load(None, model_dir)
    with torch.no_grad():
        torch.manual_seed(1)
        gen.hypernet.head_b.weight.normal_(0.0, 0.5)
        gen.hypernet.head_b.bias.normal_(0.0, 0.5)
    ckpt = dest / "hypernet.safetensors"
    save_checkpoint(gen.hypernet, ckpt)
    return model_dir, ckpt
