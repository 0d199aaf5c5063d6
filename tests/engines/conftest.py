"""Shared fixtures: one tiny model folder and adapters per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .tiny import build_fixture


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, list[Path]]:
    """(model_dir, [adapter dirs]) built once."""
    return build_fixture(tmp_path_factory.mktemp("tiny"))
