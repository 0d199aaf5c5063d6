"""Fixtures for the context tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ctx_helpers import SAMPLE, write_tree


@pytest.fixture
def sample_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write_tree(root, SAMPLE)
    os.symlink("/etc", root / "outside_dir")
    os.symlink("/etc/hostname", root / "outside_file.py")
    return root
