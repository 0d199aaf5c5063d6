"""`code2lora adapt` and `code2lora models list` end to end on a tiny base model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from code2lora.cli import app


def test_adapt_writes_a_peft_adapter_for_a_repository(tmp_path, tiny_model_dir):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "invoice.py").write_text('def parse_invoice(path):\n    """Read an invoice."""\n    return path\n')
    result = CliRunner().invoke(app, ["adapt", str(repo), "--out", str(tmp_path / "out"), "--base-model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout[result.stdout.index("{"):])
    assert meta["path"].endswith(meta["sha256"])
    assert (tmp_path / "out" / meta["sha256"] / "adapter_config.json").is_file()
    assert meta["hypernet_version"].startswith("hn-") and len(meta["context_digest"]) == 64


def test_models_list_shows_prepared_folders(tmp_path, tiny_model_dir):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    result = CliRunner().invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0 and "LlamaForCausalLM" in result.stdout and "layers=2" in result.stdout
