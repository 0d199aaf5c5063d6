"""`code2lora context PATH [--json]` and the root-is-a-package import case."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from ctx_helpers import SAMPLE, write_tree
from typer.testing import CliRunner

from code2lora.commands.context import register
from hypernet.context import extract_repo


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `context` a named sub-command
    return app


def test_cli_json_summary(tmp_path: Path) -> None:
    write_tree(tmp_path, SAMPLE)
    res = CliRunner().invoke(_app(), ["context", str(tmp_path), "--json", "--max-file-bytes", "4096"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["stats"]["files"] == 5 and s["stats"]["skipped"]["gitignored"] == 3
    assert s["top_apis"][0] == "pkg/core.py: class Engine"
    assert s["conventions"]["test_framework"] == "pytest"
    assert s["digest"] == extract_repo(tmp_path, max_file_bytes=4096).digest


def test_cli_text_summary_and_render(tmp_path: Path) -> None:
    write_tree(tmp_path, SAMPLE)
    res = CliRunner().invoke(_app(), ["context", str(tmp_path), "--render", "200"])
    assert res.exit_code == 0, res.output
    assert "top APIs\n  pkg/core.py: class Engine\n" in res.output
    assert "third-party requests" in res.output
    assert "# Repository context" in res.output


def test_root_folder_that_is_a_package(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "__init__.py": "",
        "core.py": "def api():\n    return 1\n",
        "sub/__init__.py": "",
        "sub/use.py": "from mypkg.core import api\nimport numpy\n\nX = api()\n",
    })
    ctx = extract_repo(tmp_path)
    assert ctx.analysis.import_kinds["sub/use.py"] == ["internal", "third_party"]
    assert ctx.import_graph["sub/use.py"] == ["core.py"]
