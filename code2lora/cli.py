"""The `code2lora` console command; each sub-command lives in `code2lora/commands/<name>.py`."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import code2lora.commands as _commands

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Repository-specific LoRA adapters as a service.")

# Every module in code2lora/commands exposes `register(app)`; new commands need no edit here.
for _info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"code2lora.commands.{_info.name}")
    if hasattr(_module, "register"):
        _module.register(app)


if __name__ == "__main__":
    app()
