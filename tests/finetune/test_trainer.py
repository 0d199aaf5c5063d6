"""The trainer on the tiny model: OPD lowers the reverse KL to a teacher, every method runs, resume, rollouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.finetune.conftest import save_tiny, toy_config
from training.finetune.config import config_from_dict
from training.finetune.trainer import train_from_config

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def sharp_base(tmp_path_factory) -> Path:
    # Logits scaled up so distributions are peaked: a reverse KL that can fall a lot.
    return save_tiny(tmp_path_factory.mktemp("sharp"), sharpen=8.0)


@pytest.fixture(scope="module")
def teacher_adapter(tmp_path_factory, sharp_base) -> Path:
    """Teacher = the base + a fixed random LoRA (the 'model adapted to a task' teacher, exactly representable)."""
    from hypernet.adapter import write_adapter
    from hypernet.basemodel import load_base_model
    from training.finetune.models import select_targets

    g = torch.Generator().manual_seed(5)
    model = load_base_model(sharp_base)
    tensors = {t.path: (torch.randn(4, t.in_features, generator=g) / 8, torch.randn(t.out_features, 4, generator=g) / 8)
               for t in select_targets(model, MODULES, None)}
    out = tmp_path_factory.mktemp("teacher-adapter")
    write_adapter(tensors, out, base_model=str(sharp_base), lora_alpha=8.0, content_addressed=False)
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def _cfg(base: Path, adapter: Path, out: Path, method: str, **kw):
    d = toy_config(base, None, out, method, **kw)
    d["teacher"] = {"adapter": str(adapter), "context": False}
    return config_from_dict(d)


def test_opd_lowers_reverse_kl_to_teacher(sharp_base, teacher_adapter, tmp_path):
    cfg = _cfg(sharp_base, teacher_adapter, tmp_path / "opd", "opd", steps=6, eval_every=3)
    train_from_config(cfg)
    evals = [r["eval_rkl"] for r in _records(tmp_path / "opd") if "eval_rkl" in r]
    assert len(evals) == 3  # steps 0, 3, 6
    assert evals[-1] < 0.5 * evals[0], evals
    out = tmp_path / "opd"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000000", "step-000003", "step-000006"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["end"]["eval_rkl"] < summary["start"]["eval_rkl"]
    assert (out / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize("method,extra", [
    ("sft", {"sft": {"source": "teacher"}}),
    ("sft", {"sft": {"source": "text"}}),
    ("sft", {"sft": {"source": "text", "soft": True}}),
    ("opd", {"opd": {"form": "topk", "top_k": 8, "token_keep": 0.5, "offpolicy_share": 0.5}}),
    ("opd", {"opd": {"form": "full", "focus": 0.25}}),
    ("opd", {"opd": {"focus": 0.25}}),
    ("opd", {"opd": {"form": "forward"}}),
    ("tropd", {"inner_steps": 2, "tropd": {"guide_share": 0.5, "guide_tokens": 3}}),
    ("rl", {"inner_steps": 2, "rl": {"group_size": 2, "opd_weight": 0.5, "beta": 0.1, "reward": "edit_sim"}}),
])
def test_every_method_trains(sharp_base, teacher_adapter, tmp_path, method, extra):
    cfg = _cfg(sharp_base, teacher_adapter, tmp_path / method, method, steps=2, save_every=2, eval_every=2, **extra)
    last = train_from_config(cfg)
    assert last["step"] == 2 and torch.isfinite(torch.tensor(last["loss"]))
    assert last["tokens"] > 0 and "eval_loss" in last and "train_text_loss" in last
    if method == "tropd":
        assert "clip_frac" in last and "guide_fkl" in last


def test_full_weight_student_writes_deltas(sharp_base, teacher_adapter, tmp_path):
    d = toy_config(sharp_base, None, tmp_path / "full", "opd", steps=2, save_every=1, eval_every=2)
    d["teacher"] = {"adapter": str(teacher_adapter), "context": False}
    d["student"] = {"base_model": str(sharp_base), "trainable": "full", "layers": 1, "modules": ["q_proj", "o_proj"]}
    d["lr"] = 1e-3
    train_from_config(config_from_dict(d))
    from safetensors.torch import load_file

    delta = load_file(str(tmp_path / "full" / "delta.safetensors"))
    assert sorted(delta) == ["model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.q_proj"]
    assert all(float(v.abs().sum()) > 0 for v in delta.values())


def test_resume_continues_where_it_stopped(sharp_base, teacher_adapter, tmp_path):
    out = tmp_path / "resume"
    cfg = _cfg(sharp_base, teacher_adapter, out, "opd", steps=4, save_every=2, eval_every=4)
    train_from_config(cfg, stop_after=2)
    assert [r["step"] for r in _records(out)] == [0, 1, 2]
    assert not (out / "summary.json").exists()
    last = train_from_config(cfg)
    assert [r["step"] for r in _records(out)] == [0, 1, 2, 3, 4]
    # the same run without interruption ends with the same weights (rollouts are seeded per step)
    ref = tmp_path / "straight"
    train_from_config(_cfg(sharp_base, teacher_adapter, ref, "opd", steps=4, save_every=2, eval_every=4))
    from safetensors.torch import load_file

    a = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(ref / "adapter" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert last["step"] == 4


def test_completion_logits_ignore_left_padding(sharp_base):
    from contextlib import nullcontext

    from hypernet.basemodel import load_base_model
    from training.finetune.rollout import completion_logits, sample

    model = load_base_model(sharp_base)
    comp = torch.tensor([[5, 6, 7], [8, 9, 10]])
    both = completion_logits(nullcontext(model), [[1, 2, 3, 4], [3, 4]], comp, pad_id=257)
    alone = completion_logits(nullcontext(model), [[3, 4]], comp[1:], pad_id=257)
    assert torch.allclose(both[1], alone[0], atol=1e-4)
    # the sampler's KV-cache path gives the same distribution: sampled tokens have finite, consistent log-probs
    g = torch.Generator().manual_seed(0)
    toks, mask = sample(nullcontext(model), [[1, 2, 3, 4], [3, 4]], 4, pad_id=257, eos_id=None, generator=g)
    assert toks.shape == (2, 4) and mask.sum() == 8


def test_sample_masks_after_eos():
    from contextlib import nullcontext

    from training.finetune.rollout import sample

    class AlwaysEos(torch.nn.Module):
        def forward(self, input_ids, **kw):
            logits = torch.full((input_ids.shape[0], 1, 5), -1e9)
            logits[..., 4] = 0.0  # token 4 = EOS with probability 1
            return type("Out", (), {"logits": logits, "past_key_values": None})()

    toks, mask = sample(nullcontext(AlwaysEos()), [[1], [2, 3]], 3, pad_id=0, eos_id=4)
    assert toks.tolist() == [[4, 0, 0], [4, 0, 0]]
    assert mask.tolist() == [[1, 0, 0], [1, 0, 0]]


def test_cached_context_prefix_gives_the_same_logits(sharp_base):
    from contextlib import nullcontext

    from hypernet.basemodel import load_base_model
    from training.finetune.rollout import completion_logits, prefix_cache

    model = load_base_model(sharp_base)
    ctx = [40, 41, 42, 43, 44]
    comp = torch.tensor([[5, 6, 7], [8, 9, 10]])
    prompts = [[1, 2, 3, 4], [3, 4]]
    plain = completion_logits(nullcontext(model), [ctx + p for p in prompts], comp, pad_id=257)
    cache = prefix_cache(nullcontext(model), ctx)
    cached = completion_logits(nullcontext(model), prompts, comp, pad_id=257, cache=cache)
    assert torch.allclose(plain, cached, atol=1e-4)
    # the cache is reusable: a second call sees the same prefix, not the first call's appended states
    again = completion_logits(nullcontext(model), prompts, comp, pad_id=257, cache=cache)
    assert torch.allclose(again, cached, atol=1e-5)


@pytest.mark.parametrize("method,extra", [
    ("sft", {"sft": {"source": "teacher"}}),
    ("tropd", {"inner_steps": 2, "tropd": {"guide_share": 0.5, "guide_tokens": 3}}),
])
def test_context_distillation_recipe_on_toy_texts(student_dir, tmp_path, method, extra):
    """Default teacher = the student's own base with the context (cached) before every prompt."""
    d = toy_config(student_dir, None, tmp_path / method, method, steps=2, save_every=2, eval_every=2, **extra)
    d["teacher"] = {"context": True, "context_tokens": 40}
    d["task"]["context_text"] = "def restock_shelf(shelf, count): ...\nclass ShelfLabel: ...\n"
    cfg = config_from_dict(d)
    from training.finetune.trainer import build_run

    _s, teacher, task, _tok = build_run(cfg)
    assert len(teacher.context_ids) > 40 and teacher.context_cache().length == len(teacher.context_ids)
    last = train_from_config(cfg)
    assert last["step"] == 2 and "eval_rkl" in last and "teacher_loss" not in last


def test_teacher_can_carry_the_students_starting_adapter(sharp_base, teacher_adapter, tmp_path):
    """`teacher.student_adapter`: the teacher is the starting student itself (plus the context, if any)."""
    from training.finetune.evaluate import heldout_metrics
    from training.finetune.trainer import build_run

    d = toy_config(sharp_base, None, tmp_path / "self", "opd", steps=1)
    d["student"]["init_adapter"] = str(teacher_adapter)
    d["teacher"] = {"student_adapter": True, "context": False}
    student, teacher, task, tok = build_run(config_from_dict(d))
    same = heldout_metrics(student, teacher, task, tok.eos_token_id)
    assert same["eval_rkl"] == pytest.approx(0.0, abs=1e-5) and same["teacher_loss"] == pytest.approx(same["eval_loss"])
    # the reference policy (RL's KL anchor) of a run that starts from an adapter is that adapter, not the bare base
    from training.finetune.rollout import completion_logits

    prefixes, comp = [task.eval_chunks[0][:1]], torch.tensor([task.eval_chunks[0][1:]])
    with torch.no_grad():
        student.lora.b[0].add_(1.0)  # training moved the student; the reference must not move with it
        ref = completion_logits(student.reference(), prefixes, comp, tok.eos_token_id)
        start = completion_logits(teacher.active(), prefixes, comp, tok.eos_token_id)
        moved = completion_logits(student.active(), prefixes, comp, tok.eos_token_id)
    assert torch.allclose(ref, start, atol=1e-5) and not torch.allclose(moved, start, atol=1e-3)
    d["teacher"] = {"context": False}  # the plain base as teacher differs from the adapted student
    student, teacher, task, tok = build_run(config_from_dict(d))
    assert heldout_metrics(student, teacher, task, tok.eos_token_id)["eval_rkl"] > 1e-3

    d["teacher"] = {"student_adapter": True, "adapter": str(teacher_adapter)}
    with pytest.raises(ValueError, match="student_adapter"):
        build_run(config_from_dict(d))
    del d["student"]["init_adapter"]
    d["teacher"] = {"student_adapter": True}
    with pytest.raises(ValueError, match="student_adapter"):
        build_run(config_from_dict(d))


def test_teacher_gap_table(sharp_base, teacher_adapter, tmp_path, capsys):
    """Without context the starting student is its own teacher (gap 0); the context changes the teacher."""
    from training.finetune.teacher_gap import main, teacher_gap

    d = toy_config(sharp_base, None, tmp_path / "gap", "opd")
    d["student"]["init_adapter"] = str(teacher_adapter)
    d["task"]["context_text"] = "def restock_shelf(shelf, count): ...\nclass ShelfLabel: ...\n"
    rows = teacher_gap(d, [0, 30])
    by = {(r["teacher"], r["context_tokens"] > 0): r for r in rows}
    assert by[("starting student", False)]["gap"] == pytest.approx(0.0, abs=1e-5)
    assert by[("base", False)]["gap"] != pytest.approx(0.0, abs=1e-3)
    assert by[("starting student", True)]["context_tokens"] > 30
    assert by[("starting student", True)]["teacher_loss"] != pytest.approx(by[("starting student", False)]["teacher_loss"])

    recipe = tmp_path / "recipe.json"
    d["task"]["repo"] = "toy"
    del d["student"]["init_adapter"]
    recipe.write_text(json.dumps(d))
    main(["--recipe", str(recipe), "--repo", "toy", "--budgets", "0", "--out", str(tmp_path / "gap.json")])
    assert "| base | 0 |" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "gap.json").read_text())) == 1  # no --init-adapters: the base teacher only


def test_focused_opd_rollout_keeps_the_most_disputed_tokens(sharp_base, teacher_adapter, tmp_path):
    from training.finetune.methods import Env, choose_prompts, collect
    from training.finetune.trainer import build_run

    cfg = _cfg(sharp_base, teacher_adapter, tmp_path / "focus", "opd", opd={"focus": 0.25})
    student, teacher, task, tok = build_run(cfg)
    env = Env(cfg, student, teacher, tok.eos_token_id, tok.eos_token_id, lambda ids: "")
    r = collect(env, choose_prompts(cfg, task.prompts, 0), 0)
    kept, counted = r.keep.bool() & r.mask.bool(), r.mask.bool()
    assert int(kept.sum()) == max(1, round(0.25 * int(counted.sum())))
    adv = (r.logp_teacher - r.logp_old).abs()
    assert adv[kept].min() >= adv[counted & ~kept].max()

    cfg = _cfg(sharp_base, teacher_adapter, tmp_path / "certain", "opd", opd={"focus": 0.25, "focus_by": "certainty"})
    env = Env(cfg, student, teacher, tok.eos_token_id, tok.eos_token_id, lambda ids: "")
    r = collect(env, choose_prompts(cfg, task.prompts, 0), 0)
    kept, counted = r.keep.bool() & r.mask.bool(), r.mask.bool()
    with torch.no_grad():
        ls = torch.log_softmax(env.student_logits(r.prompts, r.tokens), -1)
        lt = torch.log_softmax(r.teacher_logits, -1)
    drop = -(ls.exp() * ls).sum(-1) + (lt.exp() * lt).sum(-1)  # entropy of the student minus the teacher's
    assert int(kept.sum()) == max(1, round(0.25 * int(counted.sum())))
    assert drop[kept].min() >= drop[counted & ~kept].max() - 1e-5


def test_next_token_training_lowers_the_loss_on_the_prompts_true_text(sharp_base, teacher_adapter, tmp_path):
    """train_text_loss is the loss on the true continuations of the training prompts: SFT on that text lowers it."""
    cfg = _cfg(sharp_base, teacher_adapter, tmp_path / "sft", "sft", sft={"source": "text"}, steps=6)
    train_from_config(cfg)
    evals = [r for r in _records(tmp_path / "sft") if "train_text_loss" in r]
    assert "teacher_train_text_loss" in evals[0] and "teacher_train_text_loss" not in evals[-1]
    assert evals[-1]["train_text_loss"] < evals[0]["train_text_loss"] - 0.05


def test_soft_targets_on_text_pull_the_student_to_the_teacher(sharp_base, teacher_adapter, tmp_path):
    """sft.soft: forward KL to the teacher at the text's positions; the held-out reverse KL to it falls too."""
    cfg = _cfg(sharp_base, teacher_adapter, tmp_path / "kd", "sft", sft={"source": "text", "soft": True}, steps=6)
    train_from_config(cfg)
    evals = [r for r in _records(tmp_path / "kd") if "eval_rkl" in r]
    assert evals[-1]["eval_rkl"] < 0.8 * evals[0]["eval_rkl"]


def test_device_must_be_cpu_or_cuda(sharp_base, teacher_adapter, tmp_path):
    with pytest.raises(ValueError, match="device"):
        _cfg(sharp_base, teacher_adapter, tmp_path / "x", "opd", device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_run_without_cuda_fails_clearly(sharp_base, teacher_adapter, tmp_path):
    cfg = _cfg(sharp_base, teacher_adapter, tmp_path / "cuda", "opd", steps=1, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        train_from_config(cfg)
    assert torch.get_default_device().type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["opd", "tropd", "sft"])
def test_cuda_run_trains_and_restores_the_default_device(sharp_base, teacher_adapter, tmp_path, method):
    cfg = _cfg(sharp_base, teacher_adapter, tmp_path / method, method, steps=2, save_every=2, eval_every=2,
               device="cuda")
    last = train_from_config(cfg)
    assert last["step"] == 2 and torch.isfinite(torch.tensor(last["loss"])) and "eval_loss" in last
    assert (tmp_path / method / "adapter" / "adapter_model.safetensors").is_file()
    assert torch.get_default_device().type == "cpu"
