"""Refinement: train a repository's LoRA (A and B directly) on the repository's own files, from a starting adapter.

The loss is next-token cross-entropy on windows of the context files (drawn weighted by how many
repository-identifier tokens they hold) with those tokens up-weighted, plus a KL term that keeps the predictions
on all *other* tokens close to the starting adapter's (a LoRA trained on a repository alone learns its
identifiers and forgets some general code; the KL keeps the all-token loss; `kl_identifiers` extends it to the
identifier tokens). A validation part of the files
(chosen by a stable hash of the path) drives early stopping; the best tensors seen on it are returned, so a run
that only hurts returns the starting adapter.

`method="rl"` trains the same tensors by reinforcement learning instead (`hypernet.refine_rl`): short rollouts
sampled from prompts cut out of the context files right before repository identifiers, rewarded +1 / -1 per used
identifier that exists / does not exist for the repository (symbol table, imports, builtins, prompt) plus chrF
against the true continuation, REINFORCE with group-relative advantages, the same KL to the starting adapter and
the same budget; its early stopping watches the mean reward of greedy completions on validation prompts (a
candidate whose validation all-token loss is worse than the start's by more than `rl_loss_tolerance` is not
taken).

Library code: no web, no database. The caller passes the model (frozen, shared: LoRA is applied with forward
hooks inside `applied_lora`, the base weights are never written), the starting tensors and the texts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from hypernet.lora_apply import applied_lora
from hypernet.metrics import identifier_metrics, identifier_spans, mark_tokens, stable_hash
from hypernet.metrics.generate import complete
from hypernet.refine_rl import RLPrompt, collect, rl_loss, rl_prompts, rollout_rewards

if TYPE_CHECKING:
    from hypernet.adapter import LoraTensors

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class RefineConfig:
    """Budget and loss of one refinement. `steps` and `max_seconds` both bound it; the first reached stops it."""

    steps: int = 40
    max_seconds: float = 75.0
    lr: float = 3e-3  # chosen on 3 validation repositories over 1e-3 (docs/EVAL.md)
    lr_decay: bool = False  # cosine decay of the learning rate to a tenth over `steps`
    select: str = "objective"  # supervised: select on "objective" or "ident" (guarded by the all-token loss)
    # KL(start || current) on the non-identifier tokens, or on every token with kl_identifiers (won on 6
    # validation repositories, did not hold on 22 test repositories: off, docs/EVAL.md)
    kl_weight: float = 1.0
    kl_identifiers: bool = False
    ident_weight: float = 3.0  # cross-entropy weight of repository-identifier tokens (others: 1)
    seq_len: int = 128
    batch: int = 2
    val_fraction: float = 0.15  # share of files (by path hash) held for early stopping
    val_windows: int = 8  # at most this many validation windows are scored per check
    max_train_windows: int = 512
    eval_every: int = 10
    patience: int = 2  # checks without improvement before stopping
    grad_clip: float = 1.0
    seed: int = 0
    # draw training windows in a shuffle weighted by 1 + their identifier tokens (False: uniform)
    sample_by_identifiers: bool = True  # chosen on 3 validation repositories (docs/EVAL.md)
    method: str = "supervised"  # or "rl"
    # method "rl" only
    rl_prompts: int = 2  # prompts per step
    rl_group: int = 4  # rollouts per prompt (group-relative advantages)
    rl_new_tokens: int = 20  # rollout length
    rl_prompt_tokens: int = 64  # prompt = at most this many tokens of the file before the cut
    rl_temperature: float = 1.0
    rl_ident_reward: float = 1.0  # weight of the identifier reward (mean of +1 known / -1 invented)
    rl_sim_reward: float = 1.0  # weight of the similarity reward (chrF against the true continuation)
    rl_max_prompts: int = 256  # cut points drawn from the training files
    rl_val_prompts: int = 8  # cut points of the validation files, completed greedily at every check
    rl_loss_tolerance: float = 0.02  # nats of validation all-token loss a chosen checkpoint may lose


METHODS = ("supervised", "rl")
SELECTIONS = ("objective", "ident")  # what the supervised method's validation selects on


@dataclass
class RefineResult:
    """The refined tensors (the best on validation; the start when nothing helped) and how the run went."""

    tensors: LoraTensors
    metrics: dict[str, Any]
    steps: int
    seconds: float
    stopped_early: bool
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Stream:
    ids: torch.Tensor  # [n_windows, seq_len] long
    ident: torch.Tensor  # [n_windows, seq_len] bool: token overlaps a repository identifier


def _stable_unit(seed: int, path: str) -> float:
    return stable_hash("refine-val", seed, path) / 2**64


def tokenize_files(tokenizer: Any, files: Mapping[str, str], repo_idents: set[str]) -> tuple[list[int], list[bool]]:
    """One token stream over the files (sorted by path, EOS between them) and its identifier marks."""
    ids: list[int] = []
    marks: list[bool] = []
    sep = tokenizer.eos_token_id
    for path in sorted(files):
        text = files[path]
        if not text.strip():
            continue
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids.extend(enc["input_ids"])
        marks.extend(mark_tokens([tuple(o) for o in enc["offset_mapping"]], identifier_spans(text, repo_idents)))
        if sep is not None:
            ids.append(sep)
            marks.append(False)
    return ids, marks


def _windows(ids: list[int], marks: list[bool], seq_len: int, limit: int) -> _Stream:
    n = len(ids) // seq_len
    if n == 0 and len(ids) >= 8:  # a short repository: one shorter window rather than nothing
        seq_len, n = len(ids), 1
    n = min(n, limit)
    t = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len) if n else torch.zeros(0, seq_len, dtype=torch.long)
    m = torch.tensor(marks[: n * seq_len], dtype=torch.bool).view(n, seq_len) if n else torch.zeros(0, seq_len, dtype=torch.bool)
    return _Stream(t, m)


def split_files(files: Mapping[str, str], val_fraction: float, seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """(train, validation) by a stable hash of the path; at least one file each when there are two or more."""
    paths = sorted(p for p in files if files[p].strip())
    if len(paths) < 2:
        return {p: files[p] for p in paths}, {}
    units = {p: _stable_unit(seed, p) for p in paths}
    val = [p for p in paths if units[p] < val_fraction]
    if not val:
        val = [min(paths, key=lambda p: units[p])]
    if len(val) == len(paths):
        val.remove(max(val, key=lambda p: units[p]))
    return {p: files[p] for p in paths if p not in val}, {p: files[p] for p in val}


class _Trainable:
    """A float32 copy of the starting tensors that gets gradients (A and B only), with its Adam optimiser."""

    def __init__(self, start: LoraTensors, device: torch.device, lr: float) -> None:
        self.device = device
        self.start = {p: (a.detach().to(device, torch.float32), b.detach().to(device, torch.float32))
                      for p, (a, b) in start.items()}
        self.params = {p: (a.clone().requires_grad_(True), b.clone().requires_grad_(True))
                       for p, (a, b) in self.start.items()}
        self.leaves = [t for ab in self.params.values() for t in ab]
        self.opt = torch.optim.Adam(self.leaves, lr=lr)

    def step(self, loss: torch.Tensor, grad_clip: float, lr: float | None = None) -> None:
        """One optimiser step on `loss` (gradients reach A and B only, never the shared base weights), at `lr`
        when given."""
        if lr is not None:
            for group in self.opt.param_groups:
                group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self.leaves)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.leaves, grad_clip)
        self.opt.step()

    def snapshot(self) -> LoraTensors:
        return {p: (a.detach().clone(), b.detach().clone()) for p, (a, b) in self.params.items()}


class _Cycle:
    """Indices 0..n-1 in a fresh seeded shuffle each pass; with `weights`, a weighted shuffle (heavier first)."""

    def __init__(self, n: int, gen: torch.Generator, weights: torch.Tensor | None = None) -> None:
        self.n, self.gen, self.weights = n, gen, weights
        self.order, self.cursor = self._shuffle(), 0

    def _shuffle(self) -> list[int]:
        if self.weights is None:
            return torch.randperm(self.n, generator=self.gen).tolist()
        return torch.multinomial(self.weights, self.n, replacement=False, generator=self.gen).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(min(k, self.n)):
            if self.cursor == self.n:
                self.order, self.cursor = self._shuffle(), 0
            out.append(self.order[self.cursor])
            self.cursor += 1
        return out


class _Selection:
    """The step and time budget, and the best tensors on validation with patience (both methods share it)."""

    def __init__(self, cfg: RefineConfig, t0: float, start: LoraTensors, first: dict[str, float] | None) -> None:
        self.cfg, self.t0 = cfg, t0
        self.first, self.best, self.best_step, self.best_val = first, start, 0, first
        self.bad_checks, self.steps, self.stopped = 0, 0, "steps"
        self.history: list[dict[str, float]] = []
        self._step_s = 0.0

    def stepped(self, step: int, t_step: float) -> tuple[bool, bool]:
        """After step `step` (begun at `t_step`): (validate now, out of time)."""
        self.steps = step
        self._step_s = max(self._step_s, time.perf_counter() - t_step)
        out_of_time = time.perf_counter() - self.t0 + self._step_s > self.cfg.max_seconds  # another would not fit
        last = step == self.cfg.steps or out_of_time
        return self.first is not None and (step % self.cfg.eval_every == 0 or last), out_of_time

    def checked(self, step: int, v: dict[str, float], better: bool, snapshot: Callable[[], LoraTensors]) -> bool:
        """Record a validation result; True when patience has run out (stop)."""
        if better:
            self.best, self.best_step, self.best_val, self.bad_checks = snapshot(), step, v, 0
            return False
        self.bad_checks += 1
        if self.bad_checks >= self.cfg.patience:
            self.stopped = "early"
            return True
        return False

    def result(self, start: LoraTensors, last: LoraTensors, metrics: dict[str, Any]) -> RefineResult:
        """The best tensors (the last ones when there was nothing to validate on), in the start's dtype."""
        if self.first is None:
            self.best, self.best_step = last, self.steps
        metrics = {"method": self.cfg.method, "stopped": self.stopped, "best_step": self.best_step, **metrics,
                   "history": self.history}
        if self.first is not None:
            metrics["val_start"] = {k: round(x, 5) for k, x in self.first.items()}
        if self.best_val is not None:
            metrics["val_best"] = {k: round(x, 5) for k, x in self.best_val.items()}
        out = {p: (a.to(start[p][0].dtype).cpu(), b.to(start[p][1].dtype).cpu()) for p, (a, b) in self.best.items()}
        return RefineResult(out, metrics, self.steps, time.perf_counter() - self.t0, self.stopped != "steps",
                            config=asdict(self.cfg))


def _lr_at(cfg: RefineConfig, step: int) -> float:
    """The learning rate of step `step` (1-based): constant, or a cosine from lr down to lr / 10 at `steps`."""
    if not cfg.lr_decay or cfg.steps <= 1:
        return cfg.lr
    t = (step - 1) / (cfg.steps - 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _token_losses(model: Any, tensors: LoraTensors, scaling: float, ids: torch.Tensor) -> torch.Tensor:
    """Logits of the next tokens under the adapter: [B, S-1, V]."""
    with applied_lora(model, tensors, scaling):
        return model(input_ids=ids).logits[:, :-1].float()


def _objective(logits: torch.Tensor, ids: torch.Tensor, ident: torch.Tensor, ident_weight: float,
               start_logp: torch.Tensor | None, kl_weight: float,
               kl_identifiers: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    target = ids[:, 1:]
    m = ident[:, 1:]
    logp = F.log_softmax(logits, dim=-1)
    ce = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [B, S-1]
    w = torch.where(m, torch.full_like(ce, ident_weight), torch.ones_like(ce))
    loss = (w * ce).sum() / w.sum()
    d = ce.detach()
    stats = {"ce": float(d.mean()), "ident_ce": float(d[m].mean()) if m.any() else math.nan}
    if start_logp is not None and kl_weight > 0:
        other = torch.ones_like(m) if kl_identifiers else ~m
        kl_tok = (start_logp.exp() * (start_logp - logp)).sum(-1)  # KL(start || current) per position
        kl = (kl_tok * other).sum() / other.sum().clamp(min=1)
        loss = loss + kl_weight * kl
        stats["kl"] = float(kl.detach())
    return loss, stats


@torch.no_grad()
def _validate(model: Any, tensors: LoraTensors, scaling: float, val: _Stream, ident_weight: float,
              batch: int) -> dict[str, float]:
    """Validation cross-entropy: weighted (the early-stopping objective), all tokens, identifier tokens."""
    tot_w = tot_wce = tot_ce = tot_n = tot_ice = tot_in = 0.0
    for i in range(0, val.ids.shape[0], batch):
        ids, ident = val.ids[i : i + batch], val.ident[i : i + batch]
        logits = _token_losses(model, tensors, scaling, ids)
        ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        m = ident[:, 1:]
        w = torch.where(m, torch.full_like(ce, ident_weight), torch.ones_like(ce))
        tot_w += float(w.sum())
        tot_wce += float((w * ce).sum())
        tot_ce += float(ce.sum())
        tot_n += ce.numel()
        tot_ice += float(ce[m].sum())
        tot_in += float(m.sum())
    return {"objective": tot_wce / max(tot_w, 1.0), "loss": tot_ce / max(tot_n, 1.0),
            "ident_loss": tot_ice / tot_in if tot_in else math.nan}


def refine_adapter(model: Any, tokenizer: Any, start: LoraTensors, scaling: float, context_files: Mapping[str, str],
                   repo_idents: set[str], cfg: RefineConfig | None = None,
                   progress: Progress | None = None, known: set[str] | frozenset[str] | None = None) -> RefineResult:
    """Train `start`'s A and B on `context_files`; return the best tensors on the validation files.

    `model` stays frozen (only A and B get gradients); `progress(fraction, message)` is called after every step,
    and whatever it raises ends the run (that is how a job is cancelled). Deterministic for equal inputs.
    `known`: the names that exist for the repository (`hypernet.metrics.known_identifiers` of the context);
    method "rl" needs it.
    """
    cfg = cfg or RefineConfig()
    if cfg.method not in METHODS:
        raise ValueError(f"unknown refinement method {cfg.method!r} (supported: {', '.join(METHODS)})")
    if cfg.select not in SELECTIONS:
        raise ValueError(f"unknown selection {cfg.select!r} (supported: {', '.join(SELECTIONS)})")
    if cfg.method == "rl":
        if known is None:
            raise ValueError("method 'rl' needs the repository's known identifiers")
        return _refine_rl(model, tokenizer, start, scaling, context_files, repo_idents, known, cfg, progress)
    t0 = time.perf_counter()
    report = progress or (lambda _f, _m: None)
    train_files, val_files = split_files(context_files, cfg.val_fraction, cfg.seed)
    train = _windows(*tokenize_files(tokenizer, train_files, repo_idents), cfg.seq_len, cfg.max_train_windows)
    val = _windows(*tokenize_files(tokenizer, val_files, repo_idents), cfg.seq_len, cfg.val_windows)
    if train.ids.shape[0] == 0:
        raise ValueError("no context text to train on")
    if val.ids.shape[0] == 0 and train.ids.shape[0] >= 2:  # one file: validate on its last window
        val = _Stream(train.ids[-1:], train.ident[-1:])
        train = _Stream(train.ids[:-1], train.ident[:-1])
    tr = _Trainable(start, next(model.parameters()).device, cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    # A short run sees a fraction of a larger repository: spend it on the windows that hold its identifiers.
    weights = 1.0 + train.ident.sum(1).float() if cfg.sample_by_identifiers else None
    cycle = _Cycle(train.ids.shape[0], gen, weights)
    first = _validate(model, tr.start, scaling, val, cfg.ident_weight, cfg.batch) if val.ids.shape[0] else None
    sel = _Selection(cfg, t0, tr.snapshot(), first)
    # what validation selects on: the weighted objective, or (select="ident") the identifier loss as long as the
    # all-token loss is no worse than the start's; a validation part with no identifier token falls back
    key = "ident_loss" if cfg.select == "ident" and first and not math.isnan(first["ident_loss"]) else "objective"
    loss_cap = first["loss"] if first and key == "ident_loss" else math.inf
    best_obj = first[key] if first else math.inf
    train_first = train_last = math.nan
    report(0.0, f"refining on {train.ids.shape[0]} windows of {train.ids.shape[1]} tokens"
                f" ({int(train.ident.sum())} identifier tokens), validating on {val.ids.shape[0]}")
    for step in range(1, cfg.steps + 1):
        t_step = time.perf_counter()
        batch_idx = cycle.take(cfg.batch)
        ids, ident = train.ids[batch_idx].to(tr.device), train.ident[batch_idx].to(tr.device)
        start_logp = None
        if cfg.kl_weight > 0:
            with torch.no_grad():
                start_logp = F.log_softmax(_token_losses(model, tr.start, scaling, ids), dim=-1)
        with torch.enable_grad():
            logits = _token_losses(model, tr.params, scaling, ids)
            loss, _ = _objective(logits, ids, ident, cfg.ident_weight, start_logp, cfg.kl_weight,
                                 cfg.kl_identifiers)
            tr.step(loss, cfg.grad_clip, _lr_at(cfg, step))
        del logits, start_logp
        train_last = float(loss.detach())
        if step == 1:
            train_first = train_last
        report(step / cfg.steps, f"step {step}/{cfg.steps}: loss {train_last:.4f}")
        check, out_of_time = sel.stepped(step, t_step)
        if check:
            v = _validate(model, tr.params, scaling, val, cfg.ident_weight, cfg.batch)
            sel.history.append({"step": step, **{k: round(x, 5) for k, x in v.items()}})
            better = v[key] < best_obj - 1e-6 and v["loss"] <= loss_cap
            if better:
                best_obj = v[key]
            if sel.checked(step, v, better, tr.snapshot):
                break
        if out_of_time and step < cfg.steps:
            sel.stopped = "time"
            break
    return sel.result(start, tr.snapshot(), {
        "train_windows": int(train.ids.shape[0]), "val_windows": int(val.ids.shape[0]),
        "train_files": len(train_files), "val_files": len(val_files),
        "ident_token_share": round(float(train.ident.float().mean()), 4),
        "train_loss_first": round(train_first, 5), "train_loss_last": round(train_last, 5),
    })


def _rl_validate(model: Any, tokenizer: Any, tensors: LoraTensors, scaling: float, prompts: list[RLPrompt],
                 known: set[str] | frozenset[str], cfg: RefineConfig) -> dict[str, float]:
    """Greedy completions of the validation prompts: mean reward (the selection objective, negated), identifier
    reward, similarity reward, and the evaluation's identifier exact match and invented rate at these cuts."""
    texts = complete(model, tokenizer, [p.cut.prefix_ids for p in prompts], max_new_tokens=cfg.rl_new_tokens,
                     adapter=tensors, scaling=scaling, batch_size=16)
    total, idr, sim, _bad, _good = rollout_rewards([p.cut.prefix_text for p in prompts], texts,
                                                   [p.reference for p in prompts], known, [True] * len(texts),
                                                   cfg.rl_ident_reward, cfg.rl_sim_reward)
    im = identifier_metrics([p.cut for p in prompts], texts, known)
    n = max(len(total), 1)
    return {"reward": sum(total) / n, "ident_reward": sum(idr) / n, "sim_reward": sum(sim) / n,
            "ident_em": float(im["ident_em"] or 0.0), "invented_rate": float(im["invented_rate"] or 0.0)}


def _refine_rl(model: Any, tokenizer: Any, start: LoraTensors, scaling: float, context_files: Mapping[str, str],
               repo_idents: set[str], known: set[str] | frozenset[str], cfg: RefineConfig,
               progress: Progress | None) -> RefineResult:
    """Method "rl" of `refine_adapter` (see the module docstring)."""
    t0 = time.perf_counter()
    report = progress or (lambda _f, _m: None)
    train_files, val_files = split_files(context_files, cfg.val_fraction, cfg.seed)
    train = rl_prompts(tokenizer, train_files, repo_idents, n=cfg.rl_max_prompts, prompt_tokens=cfg.rl_prompt_tokens,
                       new_tokens=cfg.rl_new_tokens, seed=cfg.seed)
    if not train:
        raise ValueError("no identifier cut points in the context files to train on")
    val_prompts = rl_prompts(tokenizer, val_files, repo_idents, n=cfg.rl_val_prompts,
                             prompt_tokens=cfg.rl_prompt_tokens, new_tokens=cfg.rl_new_tokens, seed=cfg.seed)
    if not val_prompts and len(train) >= 2:  # no cut in the validation files: hold out the last training cuts
        k = max(1, min(cfg.rl_val_prompts, len(train) // 4))
        train, val_prompts = train[:-k], train[-k:]
    val = _windows(*tokenize_files(tokenizer, val_files, repo_idents), cfg.seq_len, cfg.val_windows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tr = _Trainable(start, next(model.parameters()).device, cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    cycle = _Cycle(len(train), gen)

    def check(tensors: LoraTensors) -> dict[str, float]:
        out = _rl_validate(model, tokenizer, tensors, scaling, val_prompts, known, cfg) if val_prompts else {}
        if val.ids.shape[0]:
            out.update(_validate(model, tensors, scaling, val, cfg.ident_weight, cfg.batch))
        return out

    first = check(tr.start) if val_prompts else None
    sel = _Selection(cfg, t0, tr.snapshot(), first)
    best_reward = first["reward"] if first else -math.inf
    loss_cap = first.get("loss", math.inf) + cfg.rl_loss_tolerance if first else math.inf
    reward_first = reward_last = math.nan
    invented = produced = 0
    report(0.0, f"RL refinement on {len(train)} prompts ({cfg.rl_group} rollouts of {cfg.rl_new_tokens} tokens "
                f"each, {cfg.rl_prompts} prompts a step), validating on {len(val_prompts)} prompts")
    for step in range(1, cfg.steps + 1):
        t_step = time.perf_counter()
        chosen = [train[k] for k in cycle.take(cfg.rl_prompts)]
        ro = collect(model, tokenizer, tr.params, scaling, chosen, known, group=cfg.rl_group,
                     new_tokens=cfg.rl_new_tokens, temperature=cfg.rl_temperature, ident_weight=cfg.rl_ident_reward,
                     sim_weight=cfg.rl_sim_reward, generator=gen)
        loss, stats = rl_loss(model, tr.params, tr.start, scaling, ro, group=cfg.rl_group, kl_weight=cfg.kl_weight,
                              pad_id=int(pad_id))
        tr.step(loss, cfg.grad_clip, _lr_at(cfg, step))
        del loss
        invented += ro.invented
        produced += ro.invented + ro.known
        reward_last = float(ro.rewards.mean())
        if step == 1:
            reward_first = reward_last
        report(step / cfg.steps, f"step {step}/{cfg.steps}: reward {reward_last:.3f}, "
                                 f"{ro.invented}/{ro.invented + ro.known} identifiers invented")
        do_check, out_of_time = sel.stepped(step, t_step)
        if do_check:
            v = check(tr.params)
            sel.history.append({"step": step, **{k: round(x, 5) for k, x in v.items()},
                                **{k: round(x, 5) for k, x in stats.items()}})
            better = v["reward"] > best_reward + 1e-6 and v.get("loss", -math.inf) <= loss_cap
            if better:
                best_reward = v["reward"]
            if sel.checked(step, v, better, tr.snapshot):
                break
        if out_of_time and step < cfg.steps:
            sel.stopped = "time"
            break
    return sel.result(start, tr.snapshot(), {
        "train_prompts": len(train), "val_prompts": len(val_prompts), "val_windows": int(val.ids.shape[0]),
        "train_files": len(train_files), "val_files": len(val_files),
        "reward_first": round(reward_first, 5), "reward_last": round(reward_last, 5),
        "rollout_invented_share": round(invented / produced, 4) if produced else None,
    })
