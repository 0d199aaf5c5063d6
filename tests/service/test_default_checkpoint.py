"""The service's default hypernetwork: the shipped trained checkpoint for the bundled model."""

from __future__ import annotations

from pathlib import Path

from hypernet.checkpoint import shipped_checkpoint
from service.models import default_checkpoint
from service.settings import Settings

SHIPPED_CHECKPOINT = shipped_checkpoint()


def test_the_shipped_checkpoint_is_package_data_of_hypernet() -> None:
    import hypernet

    assert SHIPPED_CHECKPOINT.is_relative_to(Path(hypernet.__file__).parent / "checkpoints")


def test_shipped_checkpoint_is_the_default_for_the_bundled_model(tmp_path: Path) -> None:
    assert SHIPPED_CHECKPOINT.exists()
    bundled = Settings(_env_file=None, data_dir=tmp_path)
    assert default_checkpoint(bundled) == SHIPPED_CHECKPOINT
    own = Settings(_env_file=None, data_dir=tmp_path, hypernet_checkpoint=tmp_path / "mine.safetensors")
    assert default_checkpoint(own) == tmp_path / "mine.safetensors"
    # another base model: the shipped checkpoint does not fit it, so no default
    other = Settings(_env_file=None, data_dir=tmp_path, base_model_path=tmp_path / "model")
    assert default_checkpoint(other) is None


def test_shipped_checkpoint_loads_and_is_trained(tmp_path: Path) -> None:
    from hypernet.checkpoint import load_checkpoint

    model = load_checkpoint(SHIPPED_CHECKPOINT)
    assert model.config.base_model_type == "llama" and model.config.rank == 8
    # hypernetwork v2: the base model's hidden states over the context, read in order (docs/EVAL.md)
    assert model.config.token_source == "hidden_embed" and model.config.token_layers > 0
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("head_b"))
