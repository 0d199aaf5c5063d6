"""Hypernet checkpoints: round trip, version id, refusal of corrupted and mismatched files."""

from __future__ import annotations

import pytest
import torch

from hypernet.basemodel import find_targets, load_config, meta_model
from hypernet.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    save_checkpoint,
    version_id,
)
from hypernet.model import Code2LoRAHypernet, HypernetConfig


@pytest.fixture
def hypernet(tiny_model_dir) -> Code2LoRAHypernet:
    config = load_config(tiny_model_dir)
    torch.manual_seed(0)
    return Code2LoRAHypernet(HypernetConfig.for_base(config, find_targets(meta_model(config)), d_model=32, n_atoms=8))


def test_round_trip_keeps_weights_and_version(hypernet, tmp_path):
    path = tmp_path / "hn.safetensors"
    vid = save_checkpoint(hypernet, path)
    loaded = load_checkpoint(path)
    assert vid == version_id(hypernet) == version_id(loaded)
    assert loaded.config == hypernet.config
    for name, tensor in hypernet.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    save_checkpoint(loaded, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes()


def test_version_changes_with_weights(hypernet):
    before = version_id(hypernet)
    with torch.no_grad():
        hypernet.head_b.bias[0] += 1e-3
    assert version_id(hypernet) != before


def test_flipped_weight_bytes_are_refused(hypernet, tmp_path):
    path = tmp_path / "hn.safetensors"
    save_checkpoint(hypernet, path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's data: the file still parses, the content hash does not match
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_truncated_or_foreign_files_are_refused(hypernet, tmp_path):
    path = tmp_path / "hn.safetensors"
    save_checkpoint(hypernet, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a code2lora hypernet"):
        load_checkpoint(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_checkpoint_for_another_base_shape_is_refused(hypernet, tmp_path, other_model_dir):
    from hypernet.generator import AdapterGenerator

    path = tmp_path / "hn.safetensors"
    save_checkpoint(hypernet, path)
    config = load_config(other_model_dir)
    with pytest.raises(CheckpointMismatchError, match="2 layers.*this base model has 3 layers"):
        load_checkpoint(path, expect_targets=find_targets(meta_model(config)))
    with pytest.raises(CheckpointMismatchError):
        AdapterGenerator.load(path, other_model_dir)
