"""Import classification (stdlib / internal / third_party) and resolution to repository files."""

from __future__ import annotations

import posixpath
import sys
from dataclasses import dataclass, field

from hypernet.context.model import FileFacts, Import
from hypernet.context.python_lang import module_name

STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
NODE_BUILTINS = frozenset(
    "assert async_hooks buffer child_process cluster console constants crypto dgram dns domain events fs http "
    "http2 https inspector module net os path perf_hooks process punycode querystring readline repl stream "
    "string_decoder timers tls trace_events tty url util v8 vm wasi worker_threads zlib test".split()
)
_JS_EXTS = ("", ".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", "/index.ts", "/index.tsx", "/index.js",
            "/index.jsx", ".d.ts")


@dataclass
class ImportIndex:
    """Lookup tables built once per repository state from all file paths."""

    paths: set[str]
    py_by_import_name: dict[str, str] = field(default_factory=dict)  # `pkg.mod` -> path
    py_by_root_name: dict[str, str] = field(default_factory=dict)  # `src.pkg.mod` -> path
    py_packages: set[str] = field(default_factory=set)  # top-level package names (dirs with __init__.py)
    py_modules: set[str] = field(default_factory=set)  # top-level loose module names
    dirs: dict[str, list[str]] = field(default_factory=dict)  # dir -> files (Go packages)
    java_by_name: dict[str, list[str]] = field(default_factory=dict)  # `Foo` -> paths of Foo.java
    java_dir_suffixes: set[str] = field(default_factory=set)  # every suffix of every Java dir
    go_modules: list[tuple[str, str]] = field(default_factory=list)  # (module path, go.mod dir), longest first
    root_package: str = ""  # when the checkout root is itself a package (has __init__.py): its import name


def build_index(files: dict[str, FileFacts]) -> ImportIndex:
    """Index repository files for import resolution."""
    paths = set(files)
    idx = ImportIndex(paths)
    py = sorted(p for p, f in files.items() if f.language == "python")
    pkg_dirs = {p.rsplit("/", 1)[0] if "/" in p else "" for p in py if p.endswith("/__init__.py") or p == "__init__.py"}
    for p in py:
        idx.py_by_root_name.setdefault(module_name(p), p)
        parts = module_name(p).split(".")
        # Climb while the parent directory is a package: the import name starts at the top package.
        d = p.rsplit("/", 1)[0] if "/" in p else ""
        start = len(p.split("/")) - 1  # index of the file's own component
        if p.endswith("__init__.py"):
            start -= 1
            d = d.rsplit("/", 1)[0] if "/" in d else ""
            if start < 0:
                continue
        while d and d in pkg_dirs:
            start -= 1
            d = d.rsplit("/", 1)[0] if "/" in d else ""
        name = ".".join(parts[start:]) if start < len(parts) else ""
        if not name:
            continue
        idx.py_by_import_name.setdefault(name, p)
        top = name.split(".", 1)[0]
        (idx.py_packages if "." in name or p.endswith("__init__.py") else idx.py_modules).add(top)
    if "" in pkg_dirs:
        idx.root_package = _guess_root_package(files, idx)
        if idx.root_package:
            idx.py_packages.add(idx.root_package)
    for p, f in files.items():
        if f.language == "go":
            idx.dirs.setdefault(p.rsplit("/", 1)[0] if "/" in p else "", []).append(p)
        elif f.language == "gomod" and f.module:
            idx.go_modules.append((f.module, p.rsplit("/", 1)[0] if "/" in p else ""))
        elif f.language == "java":
            d, _, name = p.rpartition("/")
            idx.java_by_name.setdefault(name[:-5], []).append(p)
            segs = d.split("/") if d else []
            idx.java_dir_suffixes.update("/".join(segs[i:]) for i in range(len(segs)))
    for v in (*idx.dirs.values(), *idx.java_by_name.values()):
        v.sort()
    idx.go_modules.sort(key=lambda m: (-len(m[0]), m))
    return idx


def _guess_root_package(files: dict[str, FileFacts], idx: ImportIndex) -> str:
    """The root folder's own package name: the non-stdlib first component whose remainder resolves most."""
    votes: dict[str, int] = {}
    for f in files.values():
        if f.language != "python":
            continue
        for imp in f.imports:
            top, _, rest = imp.module.partition(".")
            if imp.level or top in STDLIB or top in idx.py_packages:
                continue
            if (rest and rest in idx.py_by_import_name) or (not rest and imp.name in idx.py_by_import_name):
                votes[top] = votes.get(top, 0) + 1
    return max(sorted(votes), key=lambda k: votes[k]) if votes else ""


def classify(f: FileFacts, imp: Import, idx: ImportIndex) -> tuple[str, list[str]]:
    """(kind, repository files the import refers to) for one import of file `f`."""
    lang = f.language
    if lang == "python":
        if imp.level:
            targets = _first(idx.py_by_root_name, [f"{imp.resolved}.{imp.name}" if imp.name else "", imp.resolved])
            return "internal", targets
        top, _, rest = imp.module.partition(".")
        module = rest if idx.root_package and top == idx.root_package else imp.module
        targets = _first(idx.py_by_import_name, [f"{module}.{imp.name}" if imp.name and module else imp.name or "",
                                                 module])
        if top in idx.py_packages or (top not in STDLIB and (top in idx.py_modules or targets)):
            return "internal", targets
        return ("stdlib" if top in STDLIB else "third_party"), []
    if lang in ("javascript", "typescript", "tsx"):
        m = imp.module
        if m.startswith("."):
            base = posixpath.normpath(posixpath.join(posixpath.dirname(f.path), m))
            return "internal", [base + e for e in _JS_EXTS if base + e in idx.paths][:1]
        if m.startswith("node:") or m.split("/", 1)[0] in NODE_BUILTINS:
            return "stdlib", []
        return "third_party", []
    if lang == "go":
        m = imp.module
        for mod, base in idx.go_modules:
            if m == mod or m.startswith(mod + "/"):
                d = "/".join(x for x in (base, m[len(mod) + 1:]) if x)
                return "internal", idx.dirs.get(d, [])
        if "." not in m.split("/", 1)[0]:
            return "stdlib", []
        return "third_party", []
    if lang == "rust":
        top = imp.module.split("::", 1)[0] if imp.module else (imp.name or "")
        if top in ("crate", "self", "super"):
            return "internal", _rust_targets(f.path, imp, idx)
        if top in ("std", "core", "alloc", "proc_macro", "test"):
            return "stdlib", []
        return "third_party", []
    if lang == "java":
        m = imp.module
        if m.startswith(("java.", "javax.", "jdk.", "sun.", "com.sun.")):
            return "stdlib", []
        rel = m.replace(".", "/")
        cands = idx.java_by_name.get(imp.name or "", [])
        hits = [p for p in cands if p.endswith(f"{rel}/{imp.name}.java")]
        if hits or rel in idx.java_dir_suffixes:
            return "internal", hits[:1]
        return "third_party", []
    return "unknown", []


def _first(table: dict[str, str], keys: list[str]) -> list[str]:
    for k in keys:
        if k and k in table:
            return [table[k]]
    return []


def _rust_targets(path: str, imp: Import, idx: ImportIndex) -> list[str]:
    parts = path.split("/")
    if "src" not in parts:
        return []
    src = "/".join(parts[: len(parts) - parts[::-1].index("src")])
    segs = [s for s in imp.module.split("::") if s not in ("crate", "self", "super")]
    if imp.name and imp.name != "*":
        segs = [*segs, imp.name]
    for k in range(len(segs), 0, -1):
        stem = f"{src}/{'/'.join(segs[:k])}"
        for cand in (stem + ".rs", stem + "/mod.rs"):
            if cand in idx.paths:
                return [cand]
    return []
