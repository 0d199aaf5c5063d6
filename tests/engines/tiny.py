"""Builders for a tiny random Llama, a byte-level tokenizer and hand-made PEFT adapters."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "import os\nimport sys\nprint('hello world')\n",
    "class Repo:\n    def __init__(self, url):\n        self.url = url\n",
    "The quick brown fox jumps over the lazy dog. 0123456789",
] * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained in memory (no downloads)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """Tiny random Llama: hidden 64, 2 layers, 4 heads of 16."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=256, eos_token_id=0, pad_token_id=1, bos_token_id=None,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    # a larger init spreads the logits so greedy choices are not near-ties
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    return model.eval()


def make_adapter(model_dir: Path, out: Path, seed: int, targets: tuple[str, ...] = ("q_proj", "v_proj"),
                 rank: int = 8, std: float = 0.3) -> Path:
    """Write a PEFT LoRA folder with random (non-zero) A and B so it changes the outputs."""
    base = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets),
                                                 lora_dropout=0.0))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.normal_(0, std)
    peft_model.save_pretrained(out)
    return out


def build_fixture(root: Path, n_adapters: int = 4) -> tuple[Path, list[Path]]:
    """Model folder (with tokenizer) plus ``n_adapters`` adapter folders under ``root``."""
    tok = make_tokenizer()
    model = make_model(len(tok))
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    adapters = [make_adapter(model_dir, root / f"adapter{i}", seed=100 + i) for i in range(n_adapters)]
    return model_dir, adapters
