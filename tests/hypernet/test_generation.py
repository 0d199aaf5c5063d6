"""Generated adapters: PEFT compatibility, zero-init no-op, determinism, repository specificity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hypernet.adapter import CONFIG_NAME, WEIGHTS_NAME, adapter_sha256, read_adapter
from hypernet.checkpoint import save_checkpoint
from hypernet.generator import AdapterGenerator
from hypernet.lora_apply import applied_lora

PROMPT = torch.tensor([[256, 100, 101, 40, 41, 58, 32, 114, 101, 116]])


def _logits(model, ids=PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _base(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _peft_logits(model_dir: Path, adapter: Path) -> torch.Tensor:
    from peft import PeftModel

    return _logits(PeftModel.from_pretrained(_base(model_dir), adapter).eval())


@pytest.fixture(scope="module")
def perturbed_ckpt(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint (both context paths) whose B head is moved off zero, so adapters differ by context."""
    gen = AdapterGenerator.load(None, tiny_model_dir, init_overrides={"use_sentence": True})
    torch.manual_seed(1)
    with torch.no_grad():
        gen.hypernet.head_b.weight.normal_(0.0, 0.5)
        gen.hypernet.head_b.bias.normal_(0.0, 0.5)
    return_path = tmp_path_factory.mktemp("ckpt") / "hypernet.safetensors"
    save_checkpoint(gen.hypernet, return_path)
    return return_path


@pytest.fixture(scope="module")
def perturbed(perturbed_ckpt: Path, tiny_model_dir: Path) -> AdapterGenerator:
    return AdapterGenerator.load(perturbed_ckpt, tiny_model_dir)


def test_zero_init_hypernet_reproduces_base_logits(tiny_model_dir, repo_a, tmp_path):
    gen = AdapterGenerator.load(None, tiny_model_dir)
    assert not gen.trained and gen.encoder.sentence is None  # the default reads base-model tokens only
    art = gen.generate(repo_a, tmp_path)
    base = _logits(_base(tiny_model_dir))
    assert torch.equal(_peft_logits(tiny_model_dir, art.path), base)
    _, tensors = read_adapter(art.path)
    assert all(torch.count_nonzero(b) == 0 for _, b in tensors.values())
    assert any(torch.count_nonzero(a) > 0 for a, _ in tensors.values())


def test_generated_adapter_loads_in_peft_and_changes_logits(perturbed, tiny_model_dir, repo_a, tmp_path):
    assert perturbed.encoder.sentence is not None and perturbed.encoder.tokens is not None
    art = perturbed.generate(repo_a, tmp_path)
    assert (art.path / CONFIG_NAME).is_file() and (art.path / WEIGHTS_NAME).is_file()
    base_model = _base(tiny_model_dir)
    base = _logits(base_model)
    peft_logits = _peft_logits(tiny_model_dir, art.path)
    assert (peft_logits - base).abs().max() > 1e-3
    # The functional path used for training computes what PEFT computes from the written files.
    config, tensors = read_adapter(art.path)
    with applied_lora(base_model, tensors, config["lora_alpha"] / config["r"]):
        hooked = _logits(base_model)
    torch.testing.assert_close(hooked, peft_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(_logits(base_model), base)  # hooks are gone after the block


def test_adapter_config_is_standard_peft(perturbed, repo_a, tmp_path):
    import json

    art = perturbed.generate(repo_a, tmp_path)
    config = json.loads((art.path / CONFIG_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["bias"] == "none" and config["r"] == 8
    assert config["base_model_name_or_path"] == perturbed.base_model_name
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    _, tensors = read_adapter(art.path)
    a, b = tensors["model.layers.1.mlp.down_proj"]
    assert a.shape == (8, 128) and b.shape == (64, 8)
    assert art.sha256 == adapter_sha256(art.path) == art.path.name
    assert art.context_digest == repo_a.digest and art.hypernet_version == perturbed.version_id
    assert set(art.timings_ms) == {"encode", "forward", "write", "total"}


def test_same_context_gives_byte_identical_adapters(perturbed_ckpt, tiny_model_dir, repo_a, tmp_path):
    first = AdapterGenerator.load(perturbed_ckpt, tiny_model_dir).generate(repo_a, tmp_path / "one")
    second = AdapterGenerator.load(perturbed_ckpt, tiny_model_dir).generate(repo_a, tmp_path / "two")
    assert first.sha256 == second.sha256
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes()


def test_different_repositories_give_different_adapters(perturbed, repo_a, repo_b, tmp_path):
    art_a = perturbed.generate(repo_a, tmp_path)
    art_b = perturbed.generate(repo_b, tmp_path)
    assert art_a.sha256 != art_b.sha256
    _, ta = read_adapter(art_a.path)
    _, tb = read_adapter(art_b.path)
    flat_a = torch.cat([torch.cat([a.flatten(), b.flatten()]) for a, b in ta.values()])
    flat_b = torch.cat([torch.cat([a.flatten(), b.flatten()]) for a, b in tb.values()])
    assert torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0) < 0.999


def test_regenerating_into_the_same_folder_reuses_the_content_address(perturbed, repo_a, tmp_path):
    first = perturbed.generate(repo_a, tmp_path)
    again = perturbed.generate(repo_a, tmp_path)
    assert again.path == first.path
    assert [p.name for p in tmp_path.iterdir()] == [first.sha256]  # no temp folders left behind
