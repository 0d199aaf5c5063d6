"""Every training config in the tree loads as a typed `TrainConfig`, and its `hypernet` section rebuilds the
network the checkpoints beside it were trained as."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors import safe_open

from hypernet.model import HypernetArch, HypernetConfig
from training.hypernet.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "training" / "configs").glob("*.json"))
RUN_CONFIGS = sorted(p for top in ("training", "hypernet", "docs") for p in (ROOT / top).rglob("train_config.json"))
# Set by the base model (`HypernetConfig.for_base`) or by the trainer, never by a training config.
NOT_IN_ARCH = {"base_model_type", "num_layers", "hidden_size", "targets", "extra"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_tree_has_configs_and_run_configs():
    assert len(CONFIGS) >= 5
    assert any("hypernet/checkpoints" in _rel(p) for p in RUN_CONFIGS)
    assert any("training/checkpoints" in _rel(p) for p in RUN_CONFIGS)
    assert any("docs/artefacts/ablations" in _rel(p) for p in RUN_CONFIGS)


@pytest.mark.parametrize("path", CONFIGS + RUN_CONFIGS, ids=_rel)
def test_every_config_loads_typed(path: Path):
    cfg = load_config(path)
    raw = json.loads(path.read_text())
    assert isinstance(cfg, TrainConfig) and isinstance(cfg.hypernet, HypernetArch)
    for key, value in raw.get("hypernet", {}).items():
        assert getattr(cfg.hypernet, key) == value
    # What a run writes beside its checkpoint (`to_dict`) reads back as the same config.
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_arch_is_hypernet_config_less_what_the_base_model_sets():
    assert {f.name for f in fields(HypernetConfig)} - {f.name for f in fields(HypernetArch)} == NOT_IN_ARCH


def test_unknown_hypernet_key_is_refused_by_name(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hypernet": {"rank": 4, "n_atomz": 8}}))
    with pytest.raises(ValueError, match="n_atomz"):
        load_config(path)


def _stored_config(weights: Path) -> HypernetConfig:
    with safe_open(str(weights), framework="pt") as f:
        return HypernetConfig.from_dict(json.loads((f.metadata() or {})["config"]))


@pytest.mark.parametrize("path", [p for p in RUN_CONFIGS if (p.parent / "hypernet.safetensors").is_file()], ids=_rel)
def test_run_config_rebuilds_the_checkpoint_it_trained(path: Path):
    stored = _stored_config(path.parent / "hypernet.safetensors")
    cfg = load_config(path)
    base = SimpleNamespace(model_type=stored.base_model_type, num_hidden_layers=stored.num_layers,
                           hidden_size=stored.hidden_size)
    rebuilt = HypernetConfig.for_base(base, [], extra=stored.extra, **asdict(cfg.hypernet))
    rebuilt.targets = stored.targets
    assert rebuilt == stored
    assert rebuilt.to_dict() == stored.to_dict()  # the same canonical config, so the same version id
    assert asdict(cfg.hypernet) == {k: v for k, v in asdict(stored).items() if k not in NOT_IN_ARCH}
