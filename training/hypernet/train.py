"""The training loop: generated LoRA applied functionally to the frozen base model, gradients only into the
hypernetwork (or, for the control arm, into one shared LoRA). AdamW + warmup/cosine, gradient clipping,
optional bf16 autocast, resumable state, tqdm progress, JSONL metrics and a plot of the curves."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hypernet.encoder import EncodedContext, collate
from hypernet.lora_apply import applied_lora
from training.data.corpus import RepoData
from training.hypernet.config import TrainConfig
from training.hypernet.split import SplitLM, top_targets
from training.lora import LoraParams

log = logging.getLogger(__name__)
STATE_NAME = "state.pt"
LOG_NAME = "train_log.jsonl"


class SharedLoRA(LoraParams):
    """One trainable LoRA for every repository (the control arm, and the per-repository upper bound)."""

    def forward(self, batch: int = 1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{path: (A [batch, r, in], B [batch, out, r])} (the same tensors for every sample)."""
        return {p: (a.unsqueeze(0).expand(batch, -1, -1), b.unsqueeze(0).expand(batch, -1, -1))
                for p, a, b in zip(self.paths, self.a, self.b, strict=False)}

    def tensors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Unbatched, detached {path: (A, B)} (for PEFT export)."""
        return {p: (a.detach(), b.detach()) for p, a, b in zip(self.paths, self.a, self.b, strict=False)}


@dataclass
class Batch:
    """Fixed-length sequences with their cached bottom states and the repositories they come from."""

    h: torch.Tensor  # [B, S, hidden]
    ids: torch.Tensor  # [B, S]
    ident: torch.Tensor  # [B, S] bool
    repos: list[int]


def build_hypernet(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    """A fresh hypernet (or shared LoRA) for the top `adapt_layers` layers of `model`."""
    from hypernet.model import Code2LoRAHypernet, HypernetConfig

    targets = top_targets(model, cfg.adapt_layers)
    torch.manual_seed(cfg.seed)
    if cfg.arm == "shared_lora":
        return SharedLoRA(targets, cfg.hypernet.rank, cfg.hypernet.lora_alpha, seed=cfg.seed)
    extra = {"adapt_layers": cfg.adapt_layers, "token_budget": cfg.corpus.context_budget,
             "max_items": cfg.corpus.max_items, "trained_by": "training.hypernet", "run": cfg.name}
    return Code2LoRAHypernet(HypernetConfig.for_base(model.config, targets, extra=extra,
                                                     **asdict(cfg.hypernet)))


def adapters_for(net: nn.Module, feats: list[EncodedContext], drop: float = 0.0,
                 gen: torch.Generator | None = None) -> tuple[dict, float]:
    """Batched adapters for the given encoded contexts, and their LoRA scaling.

    `drop` hides that share of each context's tokens (training only): the hypernet cannot memorise a training
    repository's whole token set, so it has to learn what any context's tokens are worth.
    """
    if isinstance(net, SharedLoRA):
        return net(len(feats)), net.scaling
    pooled, tokens, mask = collate(feats)
    if drop > 0 and mask is not None:
        keep = torch.rand(mask.shape, generator=gen) >= drop
        keep[:, 0] = True  # never an empty context
        mask = mask & keep
    device = next(net.parameters()).device
    pooled, tokens, mask = (None if t is None else t.to(device) for t in (pooled, tokens, mask))
    return net(pooled, tokens, mask), net.config.scaling


def token_losses(split: SplitLM, adapters: dict | None, scaling: float, h: torch.Tensor, ids: torch.Tensor,
                 select: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of predicting ids[:, 1:] (selected positions only), and the selection mask [B, S-1]."""
    if adapters is None:
        hidden = split.top(h)
    else:
        with applied_lora(split.model, adapters, scaling):
            hidden = split.top(h)
    tgt = ids[:, 1:]
    sel = torch.ones_like(tgt, dtype=torch.bool) if select is None else select
    logits = split.logits(hidden[:, :-1][sel])
    return F.cross_entropy(logits, tgt[sel], reduction="none"), sel


def _rolled(adapters: dict) -> dict:
    return {p: (a.roll(1, 0), b.roll(1, 0)) for p, (a, b) in adapters.items()}


def step_loss(cfg: TrainConfig, split: SplitLM, net: nn.Module, batch: Batch, feats: list[EncodedContext],
              gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted next-token loss (+ optional contrastive hinge); returns (loss, metrics)."""
    adapters, scaling = adapters_for(net, [feats[r] for r in batch.repos], cfg.context_dropout, gen)
    ident = batch.ident[:, 1:]
    sample = (torch.rand(ident.shape, generator=gen) < cfg.other_positions).to(ident.device)
    select = ident | sample
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp):
        ce, sel = token_losses(split, adapters, scaling, batch.h, batch.ids, select)
    ce = ce.float()
    is_ident = ident[sel]
    ced = ce.detach()
    w = torch.where(is_ident, torch.full_like(ce, cfg.ident_weight), torch.ones_like(ce))
    loss = (w * ce).sum() / w.sum()
    n_id = int(is_ident.sum())
    metrics = {"ce": float(ced[~is_ident].mean()) if (~is_ident).any() else float("nan"),
               "ident_ce": float(ced[is_ident].mean()) if n_id else float("nan"), "ident_tokens": n_id}
    if cfg.contrastive_weight > 0 and len(batch.repos) > 1 and n_id:
        # Same sequences, adapters of other repositories (rolled batch): identifier loss must be higher.
        ident_only = ident.clone()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp):
            ce_o, _ = token_losses(split, _rolled(adapters), scaling, batch.h, batch.ids, ident_only)
        row = torch.arange(ident.shape[0], device=ident.device).unsqueeze(1).expand_as(ident)
        own_rows, other_rows = row[sel][is_ident], row[ident_only]
        terms = []
        for i in range(ident.shape[0]):
            own_i, oth_i = ce[is_ident][own_rows == i], ce_o.float()[other_rows == i]
            if own_i.numel():
                terms.append(F.relu(cfg.contrastive_margin + own_i.mean() - oth_i.mean()))
        if terms:
            con = torch.stack(terms).mean()
            loss = loss + cfg.contrastive_weight * con
            metrics["contrastive"] = float(con.detach())
            metrics["ident_ce_other"] = float(ce_o.detach().float().mean())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def lr_lambda(cfg: TrainConfig):
    """Linear warmup, then cosine decay to `min_lr_ratio`."""
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def sample_batch(cfg: TrainConfig, step: int, train: list[tuple[int, int]], by_repo: dict[int, list[int]],
                 states: torch.Tensor, ids: torch.Tensor, ident: torch.Tensor) -> Batch:
    """Deterministic in (seed, step), so a resumed run draws the same batches: B repositories, one chunk each."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    repos = list(by_repo)
    order = torch.randperm(len(repos), generator=g).tolist()
    chosen = []
    for k in range(cfg.batch_size):
        r = repos[order[k % len(repos)]]
        rows = by_repo[r]
        chosen.append(rows[int(torch.randint(len(rows), (1,), generator=g))])
    idx = torch.tensor(chosen)
    return Batch(states[idx], ids[idx], ident[idx], [train[i][0] for i in chosen])


def seq_tensors(repos: list[RepoData], rows: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack fixed-length chunk sequences: (ids [N, S], ident [N, S])."""
    ids = torch.tensor([repos[r].chunks[c].ids for r, c in rows], dtype=torch.long)
    ident = torch.tensor([repos[r].chunks[c].ident for r, c in rows], dtype=torch.bool)
    return ids, ident


def bottom_states(split: SplitLM, ids: torch.Tensor, batch: int = 8, progress: bool = False) -> torch.Tensor:
    """Bottom-layer states for all sequences, in batches."""
    from tqdm import tqdm

    out = []
    device = next(split.model.parameters()).device
    for i in tqdm(range(0, ids.shape[0], batch), desc="bottom states", disable=not progress):
        out.append(split.bottom(ids[i : i + batch].to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0)


class Trainer:
    """Holds model, data and state; `run()` trains to `cfg.steps`, resuming from `work_dir` state if present."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, repos: list[RepoData], feats: list[EncodedContext],
                 cache_key: str | None = None) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        targets = top_targets(model, cfg.adapt_layers)
        self.split = SplitLM(model, min(t.layer for t in targets))
        self.repos, self.feats = repos, feats
        self.net = build_hypernet(cfg, model).to(self.device)
        self.out_dir = Path(cfg.out_dir)
        self.state_dir = cfg.work_path / "runs" / cfg.name
        self.train_rows = [(i, c) for i, r in enumerate(repos) if r.split == "train" for c in range(len(r.chunks))]
        self.val_rows = [(i, c) for i, r in enumerate(repos) if r.split == "val"
                         for c in range(min(cfg.val_chunks_per_repo, len(r.chunks)))]
        self.by_repo: dict[int, list[int]] = {}
        for k, (r, _c) in enumerate(self.train_rows):
            self.by_repo.setdefault(r, []).append(k)
        if not self.train_rows:
            raise ValueError("no training sequences (no repository in the train split)")
        self.ids, self.ident = seq_tensors(repos, self.train_rows)
        self.states = self._cached_states("train", self.ids, cache_key)
        if self.val_rows:  # small: kept on the run's device
            self.val_ids, self.val_ident = seq_tensors(repos, self.val_rows)
            self.val_states = self._cached_states("val", self.val_ids, cache_key).to(self.device)
            self.val_ids, self.val_ident = self.val_ids.to(self.device), self.val_ident.to(self.device)
        self.opt = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        self.step = 0
        self._val_base: dict[str, float] | None = None

    def _cached_states(self, which: str, ids: torch.Tensor, key: str | None) -> torch.Tensor:
        path = self.cfg.work_path / f"states-{which}-{key}-{self.split.first}.pt" if key else None
        if path is not None and path.is_file():
            cached = torch.load(path)
            if cached["ids"].shape == ids.shape and torch.equal(cached["ids"], ids):
                return cached["h"]
        t0 = time.perf_counter()
        h = bottom_states(self.split, ids, progress=self.cfg.progress)
        log.info("bottom states (%s): %d sequences in %.1fs", which, ids.shape[0], time.perf_counter() - t0)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"ids": ids, "h": h}, path)
        return h

    # ------------------------------------------------------------------ state

    def save_state(self) -> None:
        """Atomic resume state: weights, optimizer, scheduler, step."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / f".{STATE_NAME}.tmp"
        torch.save({"step": self.step, "net": self.net.state_dict(), "opt": self.opt.state_dict(),
                    "sched": self.sched.state_dict(), "config": self.cfg.to_dict()}, tmp)
        os.replace(tmp, self.state_dir / STATE_NAME)

    def load_state(self) -> bool:
        """Resume if a state exists; trims log lines written after that state."""
        path = self.state_dir / STATE_NAME
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=False, map_location=self.device)
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step = int(state["step"])
        log_path = self.out_dir / LOG_NAME
        if log_path.is_file():
            keep = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= self.step]
            log_path.write_text("".join(k + "\n" for k in keep))
        return True

    def _log(self, record: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / LOG_NAME, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ loop

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Val chunks: loss with own adapter vs base, and identifier loss with own vs another repo's adapter."""
        if not self.val_rows:
            return {}
        self.net.eval()
        repos = [r for r, _ in self.val_rows]
        shift_ident = self.val_ident[:, 1:]
        if self._val_base is None:
            ce, _ = token_losses(self.split, None, 1.0, self.val_states, self.val_ids)
            ce = ce.view(shift_ident.shape)
            self._val_base = {"val_base": float(ce.mean()), "val_base_ident": float(ce[shift_ident].mean())}
        # One adapter per repository, indexed per row: the same numbers as one per row, a fraction of the memory
        # (a 2,048-token hidden-state context is 9 MB per row before the hypernet's own activations).
        uniq = sorted(set(repos))
        per_repo, scaling = adapters_for(self.net, [self.feats[r] for r in uniq])
        idx = torch.tensor([uniq.index(r) for r in repos], device=self.device)
        adapters = {p: (a[idx], b[idx]) for p, (a, b) in per_repo.items()}
        ce, _ = token_losses(self.split, adapters, scaling, self.val_states, self.val_ids)
        ce = ce.view(shift_ident.shape)
        # "other": each sequence with the adapter of a sequence from another repository
        shift = next((k for k in range(1, len(repos)) if all(repos[i] != repos[(i - k) % len(repos)]
                                                             for i in range(len(repos)))), 1)
        other = {p: (a.roll(shift, 0), b.roll(shift, 0)) for p, (a, b) in adapters.items()}
        ce_o, _ = token_losses(self.split, other, scaling, self.val_states, self.val_ids)
        ce_o = ce_o.view(shift_ident.shape)
        self.net.train()
        return {**self._val_base, "val_own": float(ce.mean()), "val_own_ident": float(ce[shift_ident].mean()),
                "val_other_ident": float(ce_o[shift_ident].mean())}

    def run(self, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        """Train until `cfg.steps` (or `stop_after` more steps); save state, checkpoint, log and plot."""
        from tqdm import tqdm

        if resume and self.load_state():
            log.info("resumed %s at step %d", self.cfg.name, self.step)
        else:  # a fresh run starts a fresh log
            (self.out_dir / LOG_NAME).unlink(missing_ok=True)
        cfg = self.cfg
        end = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        self.net.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.name}", disable=not cfg.progress)
        last: dict[str, Any] = {}
        while self.step < end:
            t0 = time.perf_counter()
            batch = sample_batch(cfg, self.step, self.train_rows, self.by_repo, self.states, self.ids, self.ident)
            batch = Batch(batch.h.to(self.device), batch.ids.to(self.device), batch.ident.to(self.device), batch.repos)
            gen = torch.Generator().manual_seed(cfg.seed * 7_919 + self.step)
            loss, metrics = step_loss(cfg, self.split, self.net, batch, self.feats, gen)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            lr = self.opt.param_groups[0]["lr"]
            self.opt.step()
            self.sched.step()
            self.step += 1
            last = {"step": self.step, "kind": "train", **metrics, "grad_norm": float(grad_norm), "lr": lr,
                    "sec": round(time.perf_counter() - t0, 3)}
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                last.update(self.validate())
            self._log(last)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", id=f"{metrics['ident_ce']:.2f}")
            if self.step % cfg.save_every == 0 or self.step == end:
                self.save_state()
        bar.close()
        if self.step >= cfg.steps:
            self.finish()
        return last

    def finish(self) -> Path:
        """Write the final artefacts into out_dir: checkpoint (or PEFT adapter), config, curves."""
        from training.hypernet.plot import plot_curves

        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "train_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        if isinstance(self.net, SharedLoRA):
            from hypernet.adapter import write_adapter

            target = self.out_dir / "adapter"
            write_adapter(self.net.tensors(), target, base_model=str(self.cfg.base_model or "bundled"),
                          lora_alpha=self.net.lora_alpha, content_addressed=False)
        else:
            from hypernet.checkpoint import save_checkpoint

            target = self.out_dir / "hypernet.safetensors"
            version = save_checkpoint(self.net.eval(), target)
            (self.out_dir / "VERSION").write_text(version + "\n")
        try:
            plot_curves(self.out_dir / LOG_NAME, self.out_dir / "curves.png", title=self.cfg.name)
        except Exception as exc:  # a plot must never lose a trained model
            log.warning("plot failed: %s", exc)
        return target


def copy_into(src: Path, dst: Path) -> None:
    """Copy a file, creating parents."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
