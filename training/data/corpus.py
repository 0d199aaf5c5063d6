"""Build the corpus: per repository, files split into context (what the hypernet reads) and targets (held out).

Tasks built from the target files:
- ``chunk``: next-token windows of ``seq_len`` tokens, with a mask of tokens that belong to identifiers
  defined in the repository's *context* files (the adapter can only know those from the context);
- ``line``: line completion (prefix = up to ``prefix_tokens`` tokens before the line, target = the line);
- ``assert``: assertion completion from the extractor (prefix = test code up to the asserted value).
Repositories are split into train / val / test by a seeded hash of their name, never by file. With the ``"public"``
source, the public manifest fixes the split of its GitHub repositories and every other repository is train.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hypernet.metrics.text import IDENT_RE, is_specific_identifier  # noqa: F401  (re-exported)
from hypernet.metrics.text import identifier_spans as _ident_spans
from hypernet.metrics.text import mark_tokens as _mark
from training.data.sources import (
    RepoSource,
    git_repos,
    public_repos,
    python_files,
    site_packages,
    stable_hash,
    stdlib_packages,
)

log = logging.getLogger(__name__)
CORPUS_FORMAT = 2  # 2: train repositories may hold more chunks than eval ones


@dataclass
class CorpusConfig:
    """Everything that decides the corpus; part of the cache key."""

    seq_len: int = 128
    max_files: int = 60  # files sampled per repository (caps very large packages)
    max_file_bytes: int = 60_000
    min_files: int = 4
    target_frac: float = 0.3  # share of non-test files held out as targets (test files are always targets)
    chunks_per_repo: int = 4  # train repositories
    eval_chunks_per_repo: int = 8  # val / test repositories (more tokens for tighter intervals)
    min_identifiers: int = 10
    min_ident_tokens: int = 10  # scored repo-identifier tokens over the kept chunks
    lines_per_repo: int = 8
    asserts_per_repo: int = 8
    prefix_tokens: int = 96
    max_target_tokens: int = 24
    context_budget: int = 1024  # tokens of rendered API text (token path)
    max_items: int = 256  # items for the sentence path
    n_test: int = 10
    n_val: int = 6
    seed: int = 0
    max_repos: int | None = None
    sources: list[str] = field(default_factory=lambda: ["stdlib", "site-packages"])  # + "public" (GitHub manifest)
    site_paths: list[str] = field(default_factory=list)
    git_paths: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    dedupe_share: float = 0.5  # drop a repository when this share of its files already appeared elsewhere
    # --- fields below are left out of key() while they hold their defaults (older cache keys stay valid) ---
    public_manifest: str = ""  # "" = training/data/public_manifest.json
    public_dir: str = ""  # where the manifest was materialised; "" = data/public under the repository root
    # With "public" in sources: the manifest's split is used verbatim for its repositories and every other
    # repository (stdlib, site-packages, git) is train, so no test repository is ever seen in training. False: one
    # hash split over all repositories, manifest ignored. Without "public" this field does nothing.
    splits_from_manifest: bool = True
    # Public GitHub projects are often one module plus tests: lower bars for origin "github" only.
    small_repo_min_files: int = 2
    small_repo_min_identifiers: int = 3
    small_repo_min_ident_tokens: int = 3

    def key(self) -> str:
        """Cache key for this configuration (new fields at their defaults are left out; the public manifest's
        content counts when the "public" source is on, so editing the manifest invalidates the cache)."""
        d = asdict(self)
        for name, default in _KEY_OPTIONAL.items():
            if d[name] == default:
                del d[name]
        if "public" in self.sources:
            path = Path(self.public_manifest) if self.public_manifest else _default_manifest()
            d["public_manifest_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def thresholds(self, origin: str) -> tuple[int, int, int]:
        """(min_files, min_identifiers, min_ident_tokens) for a repository of this origin."""
        if origin == "github":
            return self.small_repo_min_files, self.small_repo_min_identifiers, self.small_repo_min_ident_tokens
        return self.min_files, self.min_identifiers, self.min_ident_tokens


# Fields added after caches existed, with their defaults: key() skips them at these values.
_KEY_OPTIONAL: dict[str, Any] = {
    "public_manifest": "", "public_dir": "", "splits_from_manifest": True, "small_repo_min_files": 2,
    "small_repo_min_identifiers": 3, "small_repo_min_ident_tokens": 3,
}


def _default_manifest() -> Path:
    from training.data.public import MANIFEST

    return MANIFEST


@dataclass
class Sequence:
    """A scored token sequence: positions >= score_from are predicted; ident[t] marks repo-identifier tokens."""

    ids: list[int]
    ident: list[bool]
    score_from: int
    kind: str  # "chunk" | "line" | "assert"
    file: str
    target: str = ""

    def n_ident(self) -> int:
        """Scored identifier tokens."""
        return sum(self.ident[self.score_from :])


@dataclass
class RepoData:
    """One repository, split and encoded as text; what training and evaluation read."""

    name: str
    origin: str
    root: str
    digest: str
    context_files: list[str]
    target_files: list[str]
    render_text: str
    items: list[str]
    identifiers: list[str]
    chunks: list[Sequence] = field(default_factory=list)
    lines: list[Sequence] = field(default_factory=list)
    asserts: list[Sequence] = field(default_factory=list)
    split: str = "train"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def context_texts(self) -> dict[str, str]:
        """{path: text} of the context files still on disk (a cached corpus may outlive a file)."""
        out = {}
        for rel in self.context_files:
            try:
                out[rel] = (Path(self.root) / rel).read_text("utf-8", "replace")
            except OSError:
                continue
        return out

    def target_texts(self) -> dict[str, str]:
        """{path: text} of the held-out target files still on disk."""
        out = {}
        for rel in self.target_files:
            try:
                out[rel] = (Path(self.root) / rel).read_text("utf-8", "replace")
            except OSError:
                continue
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RepoData:
        """Inverse of to_json."""
        kw = dict(d)
        for k in ("chunks", "lines", "asserts"):
            kw[k] = [Sequence(**s) for s in d.get(k, [])]
        return cls(**kw)


def discover_repos(config: CorpusConfig) -> list[RepoSource]:
    """Candidate repositories from the configured sources, excluding names in `config.exclude`."""
    found: list[RepoSource] = []
    if "stdlib" in config.sources:
        found += stdlib_packages()
    if "site-packages" in config.sources:
        found += site_packages(config.site_paths or None)
    found += git_repos(config.git_paths)
    if "public" in config.sources:
        found += public_repos(config.public_manifest or None, config.public_dir or None)
    excluded = set(config.exclude)
    return [r for r in found if r.name not in excluded and r.name.split("/", 1)[-1] not in excluded
            and r.name.rsplit("/", 1)[-1] not in excluded]


def split_repos(names: Iterable[str], n_test: int, n_val: int, seed: int) -> dict[str, str]:
    """name -> "train" | "val" | "test", by a seeded hash order (stable when repositories are added)."""
    order = sorted(names, key=lambda n: stable_hash(str(seed), "split", n))
    out = {}
    for i, n in enumerate(order):
        out[n] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def _tokenize(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _chunks(rel: str, text: str, tokenizer: Any, ident: set[str], cfg: CorpusConfig) -> list[Sequence]:
    ids, offsets = _tokenize(tokenizer, text)
    marks = _mark(offsets, _ident_spans(text, ident))
    out = []
    for start in range(0, max(len(ids) - cfg.seq_len // 2, 1), cfg.seq_len):
        window = ids[start : start + cfg.seq_len]
        if len(window) < cfg.seq_len:  # fixed length: batches need no padding
            if len(ids) < cfg.seq_len:
                break
            start, window = len(ids) - cfg.seq_len, ids[-cfg.seq_len :]
        out.append(Sequence(window, marks[start : start + cfg.seq_len], 1, "chunk", rel))
    return out


def _completion(prefix: str, target: str, rel: str, kind: str, tokenizer: Any, ident: set[str],
                cfg: CorpusConfig) -> Sequence | None:
    p_ids, _ = _tokenize(tokenizer, prefix)
    t_ids, t_off = _tokenize(tokenizer, target)
    if not t_ids or len(t_ids) > cfg.max_target_tokens or not p_ids:
        return None
    p_ids = p_ids[-cfg.prefix_tokens :]
    marks = _mark(t_off, _ident_spans(target, ident))
    return Sequence(p_ids + t_ids, [False] * len(p_ids) + marks, len(p_ids), kind, rel, target)


def _line_candidates(rel: str, text: str) -> list[tuple[str, str]]:
    lines = text.splitlines(keepends=True)
    out, pos = [], 0
    for i, line in enumerate(lines):
        body = line.strip()
        if i >= 3 and 6 <= len(body) <= 100 and not body.startswith(("#", '"', "'", "@")) and body not in ("else:", "try:", "finally:"):
            indent = len(line) - len(line.lstrip())
            out.append((text[: pos + indent], body))
        pos += len(line)
    return out


def sample_files(src: RepoSource, cfg: CorpusConfig) -> list[str]:
    """The repository's .py files, capped at `max_files` by a seeded hash sample (test files kept first)."""
    from hypernet.context.textutil import is_test_path

    files = python_files(Path(src.root), cfg.max_file_bytes)
    if len(files) <= cfg.max_files:
        return files
    ranked = sorted(files, key=lambda p: stable_hash(str(cfg.seed), src.name, p))
    tests = [p for p in ranked if is_test_path(p)][: cfg.max_files // 4]
    rest = [p for p in ranked if not is_test_path(p)][: cfg.max_files - len(tests)]
    return sorted(tests + rest)


# Packaging / docs / test-runner scaffolding: in a small project it would crowd out the real module as context.
_BOILERPLATE_FILES = frozenset({"setup.py", "conftest.py", "noxfile.py", "fabfile.py", "versioneer.py"})
_DOC_DIRS = frozenset({"doc", "docs", "documentation", "sphinx"})
_TEST_MODULES = frozenset({"test.py", "tests.py"})


def is_boilerplate(path: str) -> bool:
    """setup.py, conftest.py, noxfile.py, ... or a Sphinx conf.py under a docs folder."""
    parts = path.split("/")
    return parts[-1] in _BOILERPLATE_FILES or (parts[-1] == "conf.py" and bool(_DOC_DIRS & set(parts[:-1])))


def split_files(name: str, files: list[str], cfg: CorpusConfig,
                keep_context: bool = False) -> tuple[list[str], list[str]]:
    """(context, targets): test files are targets; other files by a seeded hash; each side non-empty.

    ``keep_context`` (public GitHub repositories): boilerplate files (``is_boilerplate``) are targets like tests,
    and when the hash left no module but ``__init__.py`` files in the context one other non-test file moves back
    to it, so a one-module-plus-tests project reads its module and is scored on its tests.
    """
    from hypernet.context.textutil import is_test_path

    def held_out(p: str) -> bool:  # always a target (a single tests.py module is a test file too)
        return is_test_path(p) or (keep_context and (is_boilerplate(p) or p.rsplit("/", 1)[-1] in _TEST_MODULES))

    context, targets = [], []
    for p in files:
        if held_out(p) or stable_hash(str(cfg.seed), "file", name, p) % 1000 < cfg.target_frac * 1000:
            targets.append(p)
        else:
            context.append(p)
    if not [p for p in targets if not held_out(p)] and len(context) > 1:
        move = max(context, key=lambda p: stable_hash(str(cfg.seed), "move", name, p))
        context.remove(move)
        targets.append(move)
    # A context of bare __init__.py files (often only re-exports) defines next to nothing: take a real module too.
    if keep_context and all(p.rsplit("/", 1)[-1] == "__init__.py" for p in context):
        back = [p for p in targets if not held_out(p) and p.rsplit("/", 1)[-1] != "__init__.py"] or \
            ([] if context else [p for p in targets if not held_out(p)])
        if back:
            move = max(back, key=lambda p: stable_hash(str(cfg.seed), "move", name, p))
            targets.remove(move)
            context.append(move)
    return context, sorted(targets)


def build_repo(src: RepoSource, files: dict[str, bytes], tokenizer: Any, cfg: CorpusConfig,
               count_tokens: Callable[[str], int] | None = None, n_chunks: int | None = None) -> RepoData | None:
    """Split files, extract the context (context files only), and build the tasks from the target files."""
    from hypernet.context import RepoContext, extract_bytes

    _, min_identifiers, min_ident_tokens = cfg.thresholds(src.origin)
    context_files, target_files = split_files(src.name, sorted(files), cfg, keep_context=src.origin == "github")
    if not context_files or not target_files:
        return None
    facts = {}
    for rel in context_files + target_files:
        res = extract_bytes(rel, files[rel])
        if not isinstance(res, str):
            facts[rel] = res
    ctx_files = {p: facts[p] for p in context_files if p in facts}
    if not ctx_files:
        return None
    ctx = RepoContext.build(ctx_files, {}, max_file_bytes=cfg.max_file_bytes, max_files=cfg.max_files)
    ident = {n for n in ctx.defined_identifiers() if is_specific_identifier(n)}
    if len(ident) < min_identifiers:
        return None
    n_chunks = n_chunks or cfg.chunks_per_repo
    counter = count_tokens or (lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))
    data = RepoData(
        name=src.name, origin=src.origin, root=src.root, digest=ctx.digest, context_files=sorted(ctx_files),
        target_files=target_files, render_text=ctx.render(cfg.context_budget, counter),
        items=ctx.render_items(cfg.max_items), identifiers=sorted(ident),
    )
    chunks, lines, asserts = [], [], []
    for rel in target_files:
        text = files[rel].decode("utf-8", "replace")
        chunks += _chunks(rel, text, tokenizer, ident, cfg)
        for prefix, body in _line_candidates(rel, text):
            lines.append((prefix, body, rel))
        if rel in facts:
            for a in facts[rel].assertions:
                seq = _completion(a.prefix, a.target, rel, "assert", tokenizer, ident, cfg)
                if seq is not None:
                    asserts.append(seq)

    def rank(seq_key: str, n_ident: int) -> tuple[int, int]:  # prefer sequences with repo identifiers
        return (-min(n_ident, 8), stable_hash(str(cfg.seed), src.name, seq_key))

    data.chunks = sorted(chunks, key=lambda s: rank(f"{s.file}:{s.ids[:4]}", s.n_ident()))[:n_chunks]
    line_rank = sorted(lines, key=lambda t: rank(f"{t[2]}:{t[1]}", len(_ident_spans(t[1], ident))))
    for prefix, body, rel in line_rank:
        if len(data.lines) >= cfg.lines_per_repo:
            break
        seq = _completion(prefix, body, rel, "line", tokenizer, ident, cfg)
        if seq is not None:
            data.lines.append(seq)
    data.asserts = sorted(asserts, key=lambda s: rank(f"{s.file}:{s.target}:{len(s.ids)}", 0))[: cfg.asserts_per_repo]
    if not data.chunks or sum(c.n_ident() for c in data.chunks) < min_ident_tokens:
        return None
    return data


def build_corpus(cfg: CorpusConfig, tokenizer: Any, cache_dir: Path | None = None,
                 count_tokens: Callable[[str], int] | None = None, progress: bool = True) -> list[RepoData]:
    """All repositories (deduplicated), split into train/val/test; cached as JSON under `cache_dir`."""
    cache = Path(cache_dir) / f"corpus-{cfg.key()}.json" if cache_dir else None
    sources = discover_repos(cfg)
    source_names = sorted(s.name for s in sources)
    if cache is not None and cache.is_file():
        payload = json.loads(cache.read_text())
        # a cache built when other repositories were on disk (a corpus materialised in parts) is rebuilt
        if payload.get("format") == CORPUS_FORMAT and payload.get("sources") == source_names:
            return [RepoData.from_json(r) for r in payload["repos"]]
        log.info("corpus cache %s is stale (other repositories on disk now): rebuilding", cache.name)
    manifest_splits = "public" in cfg.sources and cfg.splits_from_manifest
    if manifest_splits:
        # Held-out public repositories first: the family and file dedupes keep the first copy, so a test or val
        # repository is never dropped for sharing files with a training one (the training copy goes instead).
        rank = {"test": 0, "val": 1}
        sources = sorted(sources, key=lambda s: rank.get(s.split, 2))  # stable: the usual order otherwise
    # Families (httpx / httpx2) are one repository: only the first copy is kept. The family is the last name
    # component, so gh/pallets/itsdangerous and pypi/itsdangerous are one family too.
    family_seen: set[str] = set()
    unique = []
    for src in sources:
        family = re.sub(r"[\d_]+$", "", src.name.rsplit("/", 1)[-1].lower())
        if family not in family_seen:
            family_seen.add(family)
            unique.append(src)
    sources = unique
    seen: set[str] = set()
    repos: list[RepoData] = []
    try:
        from tqdm import tqdm

        it = tqdm(sources, desc="corpus", disable=not progress)
    except ImportError:  # pragma: no cover
        it = sources
    for src in it:
        files: dict[str, bytes] = {}
        dup = 0
        for rel in sample_files(src, cfg):
            try:
                data = (Path(src.root) / rel).read_bytes()
            except OSError:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:  # a vendored or duplicated copy of a file seen in another repository
                dup += 1
                continue
            files[rel] = data
        if len(files) < cfg.thresholds(src.origin)[0] or dup > cfg.dedupe_share * (dup + len(files)):
            continue
        seen.update(hashlib.sha256(b).hexdigest() for b in files.values())
        try:
            # The split is not known yet: keep enough chunks for either role, cut below.
            repo = build_repo(src, files, tokenizer, cfg, count_tokens,
                              n_chunks=max(cfg.eval_chunks_per_repo, cfg.chunks_per_repo))
        except Exception as exc:  # one odd package must not stop the corpus
            log.warning("skipping %s: %s", src.name, exc)
            continue
        if repo is not None:
            repos.append(repo)
        if cfg.max_repos and len(repos) >= cfg.max_repos:
            break
    if manifest_splits:
        fixed = {s.name: s.split for s in sources if s.split}
        splits = {r.name: fixed.get(r.name, "train") for r in repos}
    else:
        splits = split_repos([r.name for r in repos], cfg.n_test, cfg.n_val, cfg.seed)
    for r in repos:
        r.split = splits[r.name]
        # the best-ranked ones: an eval repository's chunks do not depend on chunks_per_repo
        r.chunks = r.chunks[: cfg.chunks_per_repo if r.split == "train" else cfg.eval_chunks_per_repo]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"format": CORPUS_FORMAT, "config": asdict(cfg), "sources": source_names,
                                     "repos": [r.to_json() for r in repos]}))
    return repos
