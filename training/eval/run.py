"""The evaluation run: every arm on the same held-out sequences of each repository, then metrics with intervals.

Arms (adapters on the top layers the hypernet was trained for; the bottom-layer states are shared by every arm):
  base          no adapter
  shared_lora   one LoRA trained on all training repositories (same rank and modules), if given
  own           the adapter generated from the repository's own context
  average       the functional average of all evaluated repositories' generated adapters
  other         the generated adapter of another evaluated repository (the next one, cyclically)
  per_repo_lora a LoRA trained directly on the repository's context files (upper bound; wall time recorded)
  prompt        no adapter; the rendered context (`prompt_budget` tokens) prepended to the sequence

What a user sees (`hypernet.metrics`): on each repository's held-out target files, identifier cut points and
next-line prompts, completed greedily under every adapter arm (base included; the adapter applied to the full
model, not the split one), scored as identifier exact match, invented-identifier rate and generated-line
exact match / edit similarity.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hypernet.amplify import amplify, average_adapter
from hypernet.decoding import RepoVocabulary, TokenIndex, vocab_arm_suffix
from training.data.corpus import RepoData, Sequence, _chunks
from training.eval.metrics import edit_similarity, exact_match
from training.hypernet.split import SplitLM

log = logging.getLogger(__name__)
ADAPTER_ARMS = ("base", "shared_lora", "own", "average", "other", "per_repo_lora")


@dataclass
class EvalOptions:
    """Knobs of an evaluation run (the defaults fit a shared 2-core CPU in well under an hour)."""

    repos: list[str] = field(default_factory=lambda: ["test"])
    max_repos: int | None = None
    lines_per_repo: int = 4
    asserts_per_repo: int = 4
    max_prefix: int = 48  # prefix tokens kept for line / assertion completion
    prompt_budget: int = 256  # context-in-prompt: tokens of rendered context
    prompt_chunks: int = 2  # chunks per repository for the prompt arm (full forward passes: expensive)
    per_repo_lora_repos: int = 3  # repositories that also get a directly trained LoRA
    per_repo_steps: int = 15
    per_repo_lr: float = 1e-3
    per_repo_chunks: int = 4
    bootstrap: int = 2000
    seed: int = 0
    threads: int = 2
    skip_arms: list[str] = field(default_factory=list)  # e.g. precompute the hypernet-independent arms
    # arm name -> folder of PEFT adapters, one sub-folder per repository (`adapter_dirname`), e.g. adapters
    # fine-tuned from the generated ones with OPD; compared against the generated adapter they started from.
    extra_arms: dict[str, str] = field(default_factory=dict)
    export_adapters: str | None = None  # write each repository's generated adapter here (PEFT, `adapter_dirname`)
    # generated completions (hypernet.metrics): identifier cut points and next lines on the held-out files
    # (each arm re-reads every prompt through the full model: about 2 min per repository with 5 arms on a busy
    # 2-core CPU at these defaults)
    cuts_per_repo: int = 8  # per cut mode; 0: no identifier completion
    # arms scored on losses only (no generation), by full name: "average" skips its plain decoding only,
    # "average+vocab" its repository-vocabulary decoding
    gen_skip_arms: list[str] = field(default_factory=list)
    cut_mode: str = "boundary"  # boundary | inside | both
    cut_prefix_tokens: int = 256
    ident_new_tokens: int = 12
    gen_lines_per_repo: int = 4  # 0: no generated lines
    line_prefix_tokens: int = 96
    line_new_tokens: int = 24
    gen_batch: int = 16
    side_by_side: int = 3  # cut points per repository in side_by_side.md
    own_rank: bool = True  # rank the own adapter among all generated ones on each repository's chunks (N^2 passes)
    # repository-vocabulary decoding (hypernet.decoding): each generation arm again per penalty (inf: mask)
    vocab_biases: list[float] = field(default_factory=list)
    # whole-name beam (hypernet.namebeam) of this width on top of each repository-vocabulary decoding: arms
    # "own+vocab+beam4" beside "own+vocab" (0: none)
    name_beam: int = 0
    # the repository-specific part amplified (hypernet.amplify): arms "own_x2" = ref + 2 (own − ref) per factor;
    # ref is the adapter in `amplify_ref` (then "average_x2" too) or, when None, the run's own average adapter
    amplify: list[float] = field(default_factory=list)
    amplify_ref: str | None = None


@dataclass
class SeqResult:
    """Per scored position of one sequence under one arm: loss, greedy-correct flag, identifier flag."""

    ce: list[float]
    correct: list[bool]
    ident: list[bool]
    pred_ids: list[int]


def adapter_dirname(repo_name: str) -> str:
    """Folder name of a repository's adapter in an export / extra-arm folder ("pypi/requests" -> "pypi__requests")."""
    return repo_name.replace("/", "__")


def load_extra_adapter(folder: Path, repo_name: str, first_layer: int) -> tuple[dict, float] | None:
    """A repository's adapter from an extra-arm folder as ({path: (A, B)}, scaling); None when it has none.

    Evaluation runs only the layers from `first_layer` up on cached states, so an adapter that touches a lower
    layer would be silently half-applied: that is an error.
    """
    from hypernet.adapter import read_adapter, scaling
    from hypernet.basemodel import layer_of

    path = Path(folder) / adapter_dirname(repo_name)
    if not path.is_dir():
        return None
    cfg, tensors = read_adapter(path)
    low = sorted(p for p, layer in ((p, layer_of(p)) for p in tensors) if layer is not None and layer < first_layer)
    if low:
        raise ValueError(f"{path}: adapter touches layers below {first_layer} ({low[0]} ...); evaluation adapts only "
                         f"the layers the hypernet was trained for")
    return tensors, scaling(cfg)


def _trim(seq: Sequence, max_prefix: int) -> Sequence:
    if seq.kind == "chunk" or seq.score_from <= max_prefix:
        return seq
    cut = seq.score_from - max_prefix
    return Sequence(seq.ids[cut:], seq.ident[cut:], max_prefix, seq.kind, seq.file, seq.target)


def _score(split: SplitLM, h: torch.Tensor, ids: torch.Tensor, adapters: dict | None, scaling: float,
           score_from: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position CE and argmax for positions score_from.. of each row (predicted from the previous token)."""
    from hypernet.lora_apply import applied_lora

    with torch.no_grad():
        if adapters is None:
            hidden = split.top(h)
        else:
            with applied_lora(split.model, adapters, scaling):
                hidden = split.top(h)
        logits = split.logits(hidden[:, score_from - 1 : -1])
        tgt = ids[:, score_from:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none").view(tgt.shape)
        return ce, logits.argmax(-1)


class Evaluator:
    """Runs the arms over a list of repositories; `run()` returns the report dict."""

    def __init__(self, model: Any, tokenizer: Any, hypernet: Any, repos: list[RepoData], feats: list[Any],
                 opts: EvalOptions, shared_lora: dict | None = None, cache_dir: Path | None = None,
                 train_cfg: Any = None) -> None:
        self.model, self.tok, self.net, self.repos, self.feats, self.opts = model, tokenizer, hypernet, repos, feats, opts
        self.shared = shared_lora
        self.cache_dir = cache_dir
        self.train_cfg = train_cfg
        layers = sorted({row[2] for row in hypernet.config.targets})
        self.split = SplitLM(model, layers[0])
        self.scaling = hypernet.config.scaling
        self.seqs: list[list[Sequence]] = [eval_sequences(r, opts) for r in repos]
        self.timings: dict[str, Any] = {}

    # ------------------------------------------------------------------ adapters

    def generated(self) -> list[dict]:
        """Generated adapters per repository; times encode + forward per repository (ms)."""
        from hypernet.encoder import collate

        adapters, forward_ms = [], []
        for f in self.feats:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = self.net(*collate([f]))
            forward_ms.append((time.perf_counter() - t0) * 1e3)
            adapters.append({p: (a[0], b[0]) for p, (a, b) in out.items()})
        self.timings["hypernet_forward_ms"] = forward_ms
        return adapters

    def export(self, adapters: list[dict], folder: Path) -> None:
        """Write each repository's generated adapter as a PEFT folder (a starting point for fine-tuning)."""
        from hypernet.adapter import write_adapter

        for repo, tensors in zip(self.repos, adapters, strict=False):
            write_adapter(tensors, folder / adapter_dirname(repo.name), base_model="bundled",
                          lora_alpha=self.net.config.lora_alpha, content_addressed=False,
                          extra={"repo": repo.name, "source": "code2lora eval --export-adapters"})

    def _bottom(self, ids: torch.Tensor) -> torch.Tensor:
        return cached_bottom(self.split, ids, self.cache_dir)

    def per_repo_lora(self, repo: RepoData) -> tuple[dict, float, float]:
        """Train a LoRA directly on the repository's context files; (tensors, scaling, wall seconds)."""

        o = self.opts
        path = None
        if self.cache_dir is not None:
            tag = hashlib.sha256(f"{repo.digest}|{o.per_repo_steps}|{o.per_repo_lr}|{o.per_repo_chunks}|{o.seed}|"
                                 f"{self.net.config.targets}|{self.net.config.rank}".encode()).hexdigest()[:24]
            path = self.cache_dir / "per-repo-lora" / f"{tag}.pt"
            if path.is_file():
                saved = torch.load(path)
                return saved["tensors"], saved["scaling"], saved["seconds"]
        tensors, scaling, seconds = self._train_per_repo_lora(repo)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"tensors": tensors, "scaling": scaling, "seconds": seconds}, path)
        return tensors, scaling, seconds

    def _train_per_repo_lora(self, repo: RepoData) -> tuple[dict, float, float]:
        from training.hypernet.config import TrainConfig
        from training.hypernet.train import Batch, SharedLoRA, step_loss

        t0 = time.perf_counter()
        o = self.opts
        seq_len = repo.chunks[0].ids.__len__()
        ident = set(repo.identifiers)
        from training.data.corpus import CorpusConfig

        chunks = []
        for rel, text in repo.context_texts().items():
            chunks += _chunks(rel, text, self.tok, ident, CorpusConfig(seq_len=seq_len))
        chunks = sorted(chunks, key=lambda s: -s.n_ident())[: o.per_repo_chunks]
        targets = [t for t in _targets_of(self.net)]
        lora = SharedLoRA(targets, self.net.config.rank, self.net.config.lora_alpha, seed=o.seed)
        if not chunks:
            return lora.tensors(), lora.scaling, 0.0
        ids = torch.tensor([c.ids for c in chunks])
        idm = torch.tensor([c.ident for c in chunks])
        h = self.split.bottom(ids)
        cfg = TrainConfig(batch_size=min(2, len(chunks)), other_positions=1.0,
                          ident_weight=getattr(self.train_cfg, "ident_weight", 3.0))
        opt = torch.optim.AdamW(lora.parameters(), lr=o.per_repo_lr, weight_decay=0.0)
        g = torch.Generator().manual_seed(o.seed)
        for _step in range(o.per_repo_steps):
            idx = torch.randperm(len(chunks), generator=g)[: cfg.batch_size]
            batch = Batch(h[idx], ids[idx], idm[idx], [0] * len(idx))
            loss, _ = step_loss(cfg, self.split, lora, batch, [None] * 1, g)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora.parameters(), 1.0)
            opt.step()
        return lora.tensors(), lora.scaling, time.perf_counter() - t0

    # ------------------------------------------------------------------ scoring

    def score_repo(self, i: int, arms: dict[str, tuple[dict | None, float]]) -> dict[str, list[SeqResult]]:
        """Every arm on every sequence of repository i (bottom states computed once)."""
        out: dict[str, list[SeqResult]] = {a: [] for a in arms}
        for group, score_from in sequence_groups(self.seqs[i]):
            ids = torch.tensor([s.ids for s in group])
            h = None
            for arm, (adapters, scaling) in arms.items():
                key = self._result_key(arm, adapters, ids, score_from)
                hit = self._load(key)
                if hit is not None:
                    out[arm] += hit
                    continue
                if h is None:
                    h = self._bottom(ids)
                ce, pred = _score(self.split, h, ids, adapters, scaling, score_from)
                tgt = ids[:, score_from:]
                res = [SeqResult(ce[k].tolist(), (pred[k] == tgt[k]).tolist(), s.ident[score_from:], pred[k].tolist())
                       for k, s in enumerate(group)]
                self._store(key, res)
                out[arm] += res
        return out

    # Results of arms that do not depend on the hypernet (base, prompt, shared / per-repo LoRA) are cached on
    # disk by (arm, adapter content, token ids), so they can be computed while the hypernet still trains.
    def _result_key(self, arm: str, adapters: dict | None, ids: torch.Tensor, score_from: int) -> str | None:
        if self.cache_dir is None or arm not in ("base", "shared_lora", "per_repo_lora", "prompt"):
            return None
        h = hashlib.sha256(f"{arm}|{score_from}|{tuple(ids.shape)}|{self.split.first}".encode())
        h.update(ids.numpy().tobytes())
        for path in sorted(adapters or {}):
            a, b = adapters[path]
            h.update(path.encode())
            h.update(a.detach().contiguous().numpy().tobytes())
            h.update(b.detach().contiguous().numpy().tobytes())
        return h.hexdigest()[:32]

    def _load(self, key: str | None) -> list[SeqResult] | None:
        if key is None or not (self.cache_dir / "eval-results" / f"{key}.json").is_file():
            return None
        return [SeqResult(**r) for r in json.loads((self.cache_dir / "eval-results" / f"{key}.json").read_text())]

    def _store(self, key: str | None, res: list[SeqResult]) -> None:
        if key is None:
            return
        folder = self.cache_dir / "eval-results"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps([r.__dict__ for r in res]))
        os.replace(tmp, folder / f"{key}.json")

    def score_prompt(self, i: int) -> tuple[list[SeqResult], list[SeqResult], list[SeqResult], int]:
        """Context-in-prompt on the first `prompt_chunks` chunks; also base and own on the same chunks."""
        o = self.opts
        repo = self.repos[i]
        prompt_ids = self.tok(repo.render_text, add_special_tokens=False)["input_ids"][: o.prompt_budget]
        prompt_ids = prompt_ids + self.tok("\n\n", add_special_tokens=False)["input_ids"]
        res = []
        for s in [s for s in self.seqs[i] if s.kind == "chunk"][: o.prompt_chunks]:
            ids = torch.tensor([prompt_ids + s.ids])
            key = self._result_key("prompt", None, ids, len(prompt_ids))
            hit = self._load(key)
            if hit is not None:
                res += hit
                continue
            with torch.no_grad():
                logits = self.model(input_ids=ids).logits[0, len(prompt_ids) : -1].float()
            tgt = torch.tensor(s.ids[1:])
            ce = F.cross_entropy(logits, tgt, reduction="none")
            res.append(SeqResult(ce.tolist(), (logits.argmax(-1) == tgt).tolist(), s.ident[1:],
                                 logits.argmax(-1).tolist()))
            self._store(key, res[-1:])
        return res, len(prompt_ids)

    def own_ranks(self, adapters: list[dict]) -> dict[str, Any]:
        """On each repository's chunks, the loss and identifier loss under every generated adapter, and the rank of
        the repository's own adapter among them (1 = lowest loss; chance = (N + 1) / 2)."""
        n = len(adapters)
        out: dict[str, Any] = {"n_adapters": n, "chance": (n + 1) / 2, "repos": [], "loss": [], "ident_loss": []}
        for i in range(n):
            chunks = [s for s in self.seqs[i] if s.kind == "chunk"]
            if not chunks or len({len(s.ids) for s in chunks}) != 1:
                continue
            ids = torch.tensor([s.ids for s in chunks])
            idm = torch.tensor([s.ident[1:] for s in chunks])
            h = self._bottom(ids)
            losses, ident = [], []
            for j in range(n):
                ce, _ = _score(self.split, h, ids, adapters[j], self.scaling, 1)
                losses.append(float(ce.mean()))
                ident.append(float(ce[idm].mean()) if bool(idm.any()) else float("nan"))
            out["repos"].append(self.repos[i].name)
            for key, vals in (("loss", losses), ("ident_loss", ident)):
                out[key].append(1 + sum(v < vals[i] for k, v in enumerate(vals) if k != i))
        return out

    def token_index(self) -> TokenIndex:
        """The tokenizer's `TokenIndex` for repository-vocabulary decoding, built once per run."""
        if getattr(self, "_token_index", None) is None:
            self._token_index = TokenIndex.build(self.tok, self.model.config.vocab_size)
        return self._token_index

    def generation(self, i: int, arms: dict[str, tuple[dict | None, float]]) -> dict[str, Any]:
        """Identifier cut points (per cut mode) and next-line cases on repository i's held-out target files, each
        completed greedily under every given arm (one batched call per arm, the adapter applied to the full model
        through hooks); returns the cuts, the cases and `identifier_metrics` / `line_metrics` per arm."""
        from hypernet.metrics import (
            CUT_MODES,
            complete,
            identifier_metrics,
            known_identifiers,
            line_metrics,
            repo_cuts,
            repo_line_cases,
        )

        o = self.opts
        repo = self.repos[i]
        files = repo.target_texts()
        idents = frozenset(repo.identifiers)
        known = known_identifiers(repo_context(repo))
        modes = list(CUT_MODES) if o.cut_mode == "both" else [o.cut_mode]
        out: dict[str, Any] = {"cuts": {}, "ident": {}, "line_cases": [], "lines": {}}
        vocabs = [(b, RepoVocabulary(self.token_index(), known, b)) for b in o.vocab_biases]
        beams = [0] + ([o.name_beam] if o.name_beam > 0 else [])
        decodings = [("", None, 0)] + [(vocab_arm_suffix(b, w), v, w) for b, v in vocabs for w in beams]
        for mode in modes if o.cuts_per_repo > 0 else []:
            cuts = repo_cuts(files, self.tok, idents, n=o.cuts_per_repo, seed=o.seed,
                             max_prefix_tokens=o.cut_prefix_tokens, mode=mode)
            out["cuts"][mode] = cuts
            out["ident"][mode] = {}
            for (arm, (adapters, scaling)), (suffix, vocab, beam) in itertools.product(arms.items(), decodings):
                if arm + suffix in o.gen_skip_arms:
                    continue
                comps = complete(self.model, self.tok, [c.prefix_ids for c in cuts], max_new_tokens=o.ident_new_tokens,
                                 adapter=adapters, scaling=scaling, batch_size=o.gen_batch, vocab=vocab,
                                 name_beam=beam)
                out["ident"][mode][arm + suffix] = identifier_metrics(cuts, comps, known)
        if o.gen_lines_per_repo > 0:
            cases = repo_line_cases(files, self.tok, n=o.gen_lines_per_repo, seed=o.seed,
                                    max_prefix_tokens=o.line_prefix_tokens, max_target_tokens=o.line_new_tokens)
            out["line_cases"] = cases
            for (arm, (adapters, scaling)), (suffix, vocab, beam) in itertools.product(arms.items(), decodings):
                if arm + suffix in o.gen_skip_arms:
                    continue
                comps = complete(self.model, self.tok, [c.prefix_ids for c in cases], max_new_tokens=o.line_new_tokens,
                                 adapter=adapters, scaling=scaling, batch_size=o.gen_batch, stop_at_newline=True,
                                 vocab=vocab, name_beam=beam)
                out["lines"][arm + suffix] = line_metrics(cases, comps)
        return out

    def amplify_reference(self, avg: dict | None) -> dict | None:
        """The reference of --amplify, read once: the adapter in `amplify_ref`, else the run's average adapter."""
        o = self.opts
        if not o.amplify:
            return None
        if o.amplify_ref:
            from hypernet.adapter import read_adapter

            return read_adapter(Path(o.amplify_ref))[1]
        if avg is None:
            raise ValueError("amplification needs a reference adapter (amplify_ref) or two or more repositories")
        return avg

    def run(self) -> dict[str, Any]:
        """All arms, all repositories; returns the raw per-sequence results and timings."""
        from tqdm import tqdm

        o = self.opts
        gen = self.generated()
        n = len(self.repos)
        if o.export_adapters:
            self.export(gen, Path(o.export_adapters))
        avg = average_adapter(gen) if n > 1 else None
        ref = self.amplify_reference(avg)
        avg_amplified: dict[str, tuple[dict | None, float]] = {}
        if o.amplify_ref and ref is not None and avg is not None:  # against a fixed reference: the same every repo
            avg_amplified = {f"average_x{a:g}": (amplify(avg, ref, a), self.scaling) for a in o.amplify}
        results: list[dict[str, Any]] = []
        per_repo_s: list[float] = []
        gen_s: list[float] = []
        for i in tqdm(range(n), desc="eval repos"):
            arms: dict[str, tuple[dict | None, float]] = {"base": (None, 1.0), "own": (gen[i], self.scaling)}
            if self.shared is not None:
                arms["shared_lora"] = self.shared
            if avg is not None:
                arms["average"] = (avg, self.scaling)
                arms["other"] = (gen[(i + 1) % n], self.scaling)
            if ref is not None:
                arms.update({f"own_x{a:g}": (amplify(gen[i], ref, a), self.scaling) for a in o.amplify})
                arms.update(avg_amplified)
            if i < o.per_repo_lora_repos and "per_repo_lora" not in o.skip_arms:
                tensors, sc, secs = self.per_repo_lora(self.repos[i])
                arms["per_repo_lora"] = (tensors, sc)
                per_repo_s.append(secs)
            for name, folder in o.extra_arms.items():
                extra = load_extra_adapter(Path(folder), self.repos[i].name, self.split.first)
                if extra is not None:
                    arms[name] = extra
            arms = {k: v for k, v in arms.items() if k not in o.skip_arms}
            scored = self.score_repo(i, arms)
            use_prompt = o.prompt_chunks > 0 and "prompt" not in o.skip_arms
            prompt, prompt_tokens = self.score_prompt(i) if use_prompt else ([], 0)
            gen_arms = {k: v for k, v in arms.items() if k != "prompt"}  # `generation` applies gen_skip_arms
            t0 = time.perf_counter()
            generated = self.generation(i, gen_arms) if o.cuts_per_repo > 0 or o.gen_lines_per_repo > 0 else None
            gen_s.append(time.perf_counter() - t0)
            results.append({"repo": self.repos[i].name, "seqs": self.seqs[i], "arms": scored, "prompt": prompt,
                             "prompt_tokens": prompt_tokens, "generation": generated})
        ranks = self.own_ranks(gen) if o.own_rank and n > 1 else None
        self.timings["generation_s"] = gen_s
        self.timings["per_repo_lora_s"] = per_repo_s
        self.timings["per_repo_lora_steps"] = o.per_repo_steps
        return {"results": results, "adapters": gen, "timings": self.timings, "own_rank": ranks}


def eval_sequences(repo: RepoData, opts: EvalOptions) -> list[Sequence]:
    """The sequences scored for one repository: its chunks, then lines and assertions (prefixes trimmed)."""
    seqs = list(repo.chunks) + [_trim(s, opts.max_prefix) for s in repo.lines[: opts.lines_per_repo]]
    return seqs + [_trim(s, opts.max_prefix) for s in repo.asserts[: opts.asserts_per_repo]]


def sequence_groups(seqs: list[Sequence]) -> list[tuple[list[Sequence], int]]:
    """Batches without padding: all fixed-length chunks together, every completion example alone."""
    chunks = [s for s in seqs if s.kind == "chunk"]
    groups: list[tuple[list[Sequence], int]] = [(chunks, 1)] if chunks else []
    return groups + [([s], s.score_from) for s in seqs if s.kind != "chunk"]


def repo_context(repo: RepoData) -> Any:
    """The RepoContext of a repository's context files (what its adapter was generated from), re-extracted."""
    from hypernet.context import RepoContext, extract_bytes

    facts = {}
    for rel, text in repo.context_texts().items():
        res = extract_bytes(rel, text.encode("utf-8", "surrogateescape"))
        if not isinstance(res, str):
            facts[rel] = res
    return RepoContext.build(facts, {}, max_file_bytes=1 << 30, max_files=1 << 30)


def cached_bottom(split: SplitLM, ids: torch.Tensor, cache_dir: Path | None) -> torch.Tensor:
    """Bottom-layer states, cached on disk by (ids, cut layer): every arm and every re-run shares them."""
    key = hashlib.sha256(ids.numpy().tobytes() + str((tuple(ids.shape), split.first)).encode()).hexdigest()[:24]
    path = cache_dir / "eval-states" / f"{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        return torch.load(path)
    h = split.bottom(ids)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(h, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return h


def _targets_of(net: Any) -> list:
    from hypernet.basemodel import TargetModule

    return [TargetModule(*row) for row in net.config.targets]


# ---------------------------------------------------------------------- aggregation


def seq_metrics(tok: Any, seq: Sequence, r: SeqResult) -> dict[str, float | None]:
    """Per-sequence numbers: mean loss, identifier loss, exact match and edit similarity of the greedy line."""
    out: dict[str, float | None] = {"loss": sum(r.ce) / len(r.ce) if r.ce else None}
    idv = [c for c, m in zip(r.ce, r.ident, strict=False) if m]
    out["ident_loss"] = sum(idv) / len(idv) if idv else None
    if seq.kind in ("line", "assert"):
        em = float(all(r.correct))
        pred = tok.decode(r.pred_ids)
        out["em"] = em  # teacher-forced argmax = greedy decoding, for the target's own tokenization
        out["es"] = edit_similarity(pred, seq.target) if not em else 1.0
        out["em_text"] = exact_match(pred, seq.target) if not em else 1.0
    return out
