"""Helpers for the context tests: small repositories written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

SAMPLE = {
    "pkg/__init__.py": 'from .core import Engine, run\n\n__all__ = ["Engine", "run"]\n',
    "pkg/core.py": (
        "import os\nimport requests\nfrom pkg.util import helper\n\n\n"
        "class Engine:\n    def start(self, n: int) -> int:\n        return helper(n)\n\n\n"
        "def run(e: Engine) -> int:\n    return e.start(1)\n"
    ),
    "pkg/util.py": 'def helper(x: int) -> int:\n    """Help."""\n    return x\n\n\ndef _unused():\n    pass\n',
    "app.py": "from pkg import Engine, run\n\nrun(Engine())\nrun(Engine())\n",
    "tests/test_core.py": "from pkg.core import Engine\n\n\ndef test_start():\n    assert Engine().start(2) == 2\n",
    ".gitignore": "ignored_dir/\n*.log\nsecret.py\n",
    "ignored_dir/x.py": "X = 1\n",
    "secret.py": "KEY = 1\n",
    "run.log": "log\n",
    "node_modules/lib/index.js": "export function f() {}\n",
    "README.md": "# readme\n",
    "api_pb2.py": "X = 1\n",
    "blob.py": "\0\1\2 binary",
    "big.py": "# " + "x" * 5000 + "\n",
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    """Write files (str as UTF-8, bytes as is) under root."""
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
