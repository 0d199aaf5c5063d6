"""The fine-tuning loop shared by SFT / OPD / TrOPD / RL: rollouts, `inner_steps` AdamW updates per rollout batch,
gradient clipping, held-out evaluation, checkpoints (PEFT adapters or weight deltas) every `save_every` steps,
resume from `state.pt`, JSONL metrics, a progress bar and plots."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from training.finetune.config import FinetuneConfig
from training.finetune.evaluate import heldout_metrics, prompt_text_metrics
from training.finetune.methods import OBJECTIVES, Env, choose_prompts, collect
from training.finetune.models import Student, Teacher, select_targets
from training.finetune.tasks import TaskData, build_task

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"
STATE = "state.pt"
CKPT_META = "ckpt_meta.json"


def build_run(cfg: FinetuneConfig) -> tuple[Student, Teacher, TaskData, Any]:
    """Load the student (base + LoRA or trainable weights), the teacher and the task from the config."""
    from hypernet.basemodel import load_base_model, load_tokenizer

    if cfg.device != "cpu" and not torch.cuda.is_available():  # before minutes of loading, not after
        raise RuntimeError(f"device {cfg.device!r} asked for, but torch sees no CUDA device")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = load_tokenizer(cfg.student.base_model)
    base = load_base_model(cfg.student.base_model)
    base.config.use_cache = False
    sc = cfg.student
    student = Student(base, select_targets(base, sc.modules, sc.layers), sc.trainable, sc.rank, sc.lora_alpha,
                      cfg.seed)
    if sc.init_adapter:
        student.load_start(sc.init_adapter)
    tc = cfg.teacher
    # A LoRA student leaves the base weights untouched, so the same model object can serve as the teacher.
    same = tc.model is None and sc.trainable == "lora"
    t_model = base if same else load_base_model(tc.model if tc.model is not None else sc.base_model)
    task = build_task(cfg.task, tok, tc.context_tokens)
    ctx = task.context_ids if tc.context else []
    adapter = tc.adapter
    if tc.student_adapter:
        if tc.adapter or not sc.init_adapter:
            raise ValueError("teacher.student_adapter needs student.init_adapter and no teacher.adapter")
        adapter = sc.init_adapter
    teacher = Teacher.with_adapter(t_model, adapter, ctx) if adapter else Teacher(t_model, ctx)
    if not task.prompts:
        raise ValueError("the task produced no prompts")
    if cfg.device != "cpu":
        student.to(cfg.device)
        teacher.to(cfg.device)
    return student, teacher, task, tok


@contextmanager
def default_device(device: str) -> Iterator[None]:
    """New tensors are created on `device` inside the block, so rollouts, masks and metrics live where the models
    are and the loop's code needs no device arguments; the previous default comes back after."""
    previous = torch.get_default_device()
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(previous)


def _pad_id(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


class FinetuneTrainer:
    """Holds the run; `run()` trains to `cfg.steps` outer steps, resuming from `out_dir/state.pt` if present."""

    def __init__(self, cfg: FinetuneConfig, student: Student, teacher: Teacher, task: TaskData, tokenizer: Any) -> None:
        self.cfg, self.student, self.teacher, self.task, self.tok = cfg, student, teacher, task, tokenizer
        self.out = Path(cfg.out_dir)
        self.env = Env(cfg, student, teacher, _pad_id(tokenizer), tokenizer.eos_token_id,
                       lambda ids: tokenizer.decode(ids.tolist(), skip_special_tokens=True))
        self.opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.objective = OBJECTIVES[cfg.method]
        self.step = 0

    # ------------------------------------------------------------------ state and artefacts

    def save_state(self) -> None:
        """Atomic resume state: trainable tensors, optimizer and step."""
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / f".{STATE}.tmp"
        torch.save({"step": self.step, "student": self.student.state(), "opt": self.opt.state_dict(),
                    "config": self.cfg.to_dict()}, tmp)
        os.replace(tmp, self.out / STATE)

    def load_state(self) -> bool:
        """Resume if a state exists; drop metric lines written after it."""
        path = self.out / STATE
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=False, map_location=self.cfg.device)
        self.student.load_state(state["student"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        mpath = self.out / METRICS
        if mpath.is_file():
            keep = [ln for ln in mpath.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= self.step]
            mpath.write_text("".join(k + "\n" for k in keep))
        return True

    def save_checkpoint(self) -> Path:
        """checkpoints/step-NNNNNN: a PEFT adapter (LoRA) or delta.safetensors (W - W0), plus ckpt_meta.json."""
        from safetensors.torch import save_file

        path = self.out / "checkpoints" / f"step-{self.step:06d}"
        path.mkdir(parents=True, exist_ok=True)
        sc = self.cfg.student
        if self.student.lora is not None:
            from hypernet.adapter import write_adapter

            tensors = {p: (a.detach(), b.detach()) for p, (a, b) in self.student.lora.tensors().items()}
            write_adapter(tensors, path / "adapter", base_model=str(sc.base_model or "bundled"),
                          lora_alpha=self.student.lora.lora_alpha, content_addressed=False)
        else:
            save_file({p: d.contiguous() for p, d in self.student.deltas().items()}, str(path / "delta.safetensors"))
        meta = {"step": self.step, "method": self.cfg.method, "name": self.cfg.name, "base_model": sc.base_model,
                "trainable": sc.trainable}
        (path / CKPT_META).write_text(json.dumps(meta, indent=1) + "\n")
        return path

    def _log(self, record: dict[str, Any]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics for the current student (teacher loss only at step 0: it never changes)."""
        first = self.step == 0
        return {**heldout_metrics(self.student, self.teacher, self.task, self.env.pad_id, with_teacher_loss=first),
                **prompt_text_metrics(self.student, self.teacher, self.task, self.env.pad_id, with_teacher_loss=first)}

    # ------------------------------------------------------------------ loop

    def train_step(self) -> dict[str, Any]:
        """One rollout batch and `inner_steps` updates on it; returns the step's metrics."""
        cfg = self.cfg
        t0 = time.perf_counter()
        prompts = choose_prompts(cfg, self.task.prompts, self.step)
        r = collect(self.env, prompts, self.step)
        t_roll = time.perf_counter() - t0
        losses, norms, extra = [], [], {}
        for inner in range(cfg.inner_steps):
            logits = self.env.student_logits(prompts, r.tokens)
            loss, stats = self.objective(cfg, r, logits)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.grad_clip)))
            self.opt.step()
            losses.append(float(loss.detach()))
            if inner > 0:  # ratio-dependent stats (clip share, KL to the rollout policy) from the later updates
                extra.update({f"{k}_last": v for k, v in stats.items() if k in ("clip_frac", "kl_prev")})
            if inner == 0:
                extra = dict(stats)
                with torch.no_grad():
                    ls = torch.log_softmax(logits.detach(), -1)
                    lt = torch.log_softmax(r.teacher_logits, -1)
                    visited = r.mask.bool()
                    extra["rkl_full"] = float((ls.exp() * (ls - lt)).sum(-1)[visited].mean())
        # The sampled-token reverse-KL estimate only means something on tokens the student sampled itself.
        own = r.mask.bool() & ~r.teacher_written & (cfg.method != "sft")
        self.step += 1
        rec: dict[str, Any] = {
            "step": self.step, "kind": "train", "loss": losses[0], "loss_last": losses[-1],
            "grad_norm": norms[0], "grad_norm_max": max(norms),
            "rkl": float((r.logp_old - r.logp_teacher)[own].mean()) if own.any() else float("nan"),
            "reward": float(r.rewards.mean()), "tokens": int(r.mask.sum()),
            "sec_rollout": round(t_roll, 2), "sec": round(time.perf_counter() - t0, 2), **extra}
        return rec

    def run(self, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        """Train to `cfg.steps` (or `stop_after` more steps); evaluate, checkpoint, log, plot."""
        from tqdm import tqdm

        torch.set_num_threads(self.cfg.threads)
        if resume and self.load_state():
            log.info("resumed %s at step %d", self.cfg.name, self.step)
        else:
            (self.out / METRICS).unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1) + "\n")
        cfg = self.cfg
        if self.step == 0:
            self._log({"step": 0, "kind": "eval", **self.evaluate()})
            self.save_checkpoint()
        end = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.method} {cfg.name}", disable=not cfg.progress)
        last: dict[str, Any] = {}
        while self.step < end:
            last = self.train_step()
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                last.update({"kind": "train+eval", **self.evaluate()})
            self._log(last)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.3f}", rkl=f"{last['rkl']:.3f}", gn=f"{last['grad_norm']:.2f}")
            if self.step % cfg.save_every == 0 or self.step == end:
                self.save_checkpoint()
                self.save_state()
        bar.close()
        if self.step >= cfg.steps:
            self.finish()
        return last

    def finish(self) -> None:
        """Final artefacts: `adapter/` (LoRA) or `delta.safetensors`, summary.json and curves.png."""
        import shutil

        from training.finetune.plots import plot_run, summarize

        final = self.out / "checkpoints" / f"step-{self.step:06d}"
        for name in ("adapter", "delta.safetensors"):
            src = final / name
            if src.exists():
                dst = self.out / name
                if dst.is_dir():
                    shutil.rmtree(dst)
                (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
        summary = summarize(self.out / METRICS)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        try:
            plot_run(self.out / METRICS, self.out / "curves.png", title=f"{self.cfg.method}: {self.cfg.name}")
        except Exception as exc:  # a plot must never lose a trained model
            log.warning("plot failed: %s", exc)


def train_from_config(cfg: FinetuneConfig, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Build and run; returns the last logged record."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    student, teacher, task, tok = build_run(cfg)
    log.info("task %s: %d prompts, %d held-out chunks, teacher context %d tokens", task.name, len(task.prompts),
             len(task.eval_chunks), len(teacher.context_ids))
    with default_device(cfg.device):
        return FinetuneTrainer(cfg, student, teacher, task, tok).run(resume=resume, stop_after=stop_after)
