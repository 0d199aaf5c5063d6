"""End to end on the bundled SmolLM2-135M: GGUF -> prepared folder -> generated adapter -> PEFT."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.slow
def test_bundled_model_prepare_generate_and_load(tmp_path, repo_a):
    from peft import PeftModel

    from hypernet.basemodel import load_base_model, load_tokenizer, prepare_bundled
    from hypernet.generator import AdapterGenerator

    model_dir = prepare_bundled(tmp_path / "models")
    assert prepare_bundled(tmp_path / "models") == model_dir  # second call is a no-op
    base = load_base_model(model_dir)
    assert base.config.num_hidden_layers == 30 and base.config.hidden_size == 576
    tokenizer = load_tokenizer(model_dir)
    ids = tokenizer("def parse_invoice(path):", return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits

    gen = AdapterGenerator.load(None, model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        gen.hypernet.head_b.weight.normal_(0.0, 0.05)
    moved = AdapterGenerator(gen.hypernet, gen.encoder, base_model_name=gen.base_model_name, trained=True)
    art = moved.generate(repo_a, tmp_path / "adapters")
    assert art.timings_ms["total"] > 0 and art.nbytes > 1_000_000
    peft = PeftModel.from_pretrained(base, art.path).eval()
    with torch.no_grad():
        adapted = peft(input_ids=ids).logits
    assert (adapted - base_logits).abs().max() > 1e-3
