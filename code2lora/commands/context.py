"""`code2lora context PATH [--json]`: extract a checkout's context and print a summary."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def context(
    path: Path = typer.Argument(..., exists=True, file_okay=False, help="Repository checkout to read."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    full_json: bool = typer.Option(False, "--full-json", help="Print the whole context (per-file facts) as JSON."),
    render: int = typer.Option(0, "--render", help="Also print the rendered context within this many tokens."),
    top: int = typer.Option(15, "--top", help="How many top APIs and dependencies to list."),
    max_file_bytes: int = typer.Option(1_000_000, help="Skip files larger than this."),
    max_files: int = typer.Option(20_000, help="Extract at most this many files."),
) -> None:
    """Counts, top APIs, dependencies and conventions of the repository at PATH."""
    import time

    from hypernet.context import extract_repo

    t0 = time.perf_counter()
    ctx = extract_repo(path, max_file_bytes=max_file_bytes, max_files=max_files)
    seconds = time.perf_counter() - t0
    if full_json:
        typer.echo(json.dumps(ctx.to_json(), indent=1, ensure_ascii=False))
        return
    summary = ctx.summary(top=top)
    summary["seconds"] = round(seconds, 3)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        typer.echo(_text(summary))
    if render:
        typer.echo("")
        typer.echo(ctx.render(render))


def _text(s: dict) -> str:
    st, conv = s["stats"], s["conventions"]
    langs = ", ".join(f"{k} {v}" for k, v in st["by_language"].items()) or "none"
    skipped = ", ".join(f"{k} {v}" for k, v in st["skipped"].items()) or "none"
    lines = [
        f"digest      {s['digest']}",
        f"files       {st['files']} ({langs}); {st['bytes'] / 1e6:.2f} MB, {st['lines']} lines, {s['seconds']} s",
        f"skipped     {st['skipped_total']} ({skipped})" + ("; truncated at max_files" if st["truncated"] else ""),
        f"facts       {st['definitions']} definitions, {st['constants']} constants, {st['imports']} imports, "
        f"{st['assertions']} assertions, {s['import_edges']} internal import edges, "
        f"{st['files_with_parse_errors']} files with syntax errors",
        f"third-party {', '.join(s['third_party']) or '-'}",
        f"stdlib      {', '.join(s['stdlib']) or '-'}",
        "conventions " + "; ".join([
            f"functions {conv['naming']['functions']}", f"classes {conv['naming']['classes']}",
            f"typed params {conv['typing']['params_annotated']}", f"typed returns {conv['typing']['returns_annotated']}",
            f"docstrings {conv['docstrings']['style']} (coverage {conv['docstrings']['coverage']})",
            f"tests {conv['test_framework']}", f"indent {conv['formatting']['indent']}",
            f"quotes {conv['formatting']['quotes']}", f"lines {conv['formatting']['line_length']}",
        ]),
        "top APIs",
    ]
    lines += [f"  {a}" for a in s["top_apis"]] or ["  -"]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add `context`."""
    app.command()(context)
