"""Aggregate raw eval results into metrics with bootstrap intervals; write JSON, markdown and plots."""

from __future__ import annotations

import json
import math
from collections.abc import Container, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hypernet.decoding import describe_arm_suffix, parse_arm_suffix, vocab_arm_suffix
from training.eval.metrics import (
    bootstrap_ci,
    delta_cosine_matrix,
    excludes_zero,
    mean_offdiag,
    param_cosine_matrix,
)
from training.eval.run import seq_metrics

ARM_ORDER = ("base", "shared_lora", "own", "average", "other", "per_repo_lora", "prompt")
ARM_LABEL = {
    "base": "base model",
    "shared_lora": "shared LoRA (same rank/modules)",
    "own": "generated, own repo",
    "average": "average generated adapter",
    "other": "another repo's generated adapter",
    "per_repo_lora": "per-repo LoRA trained directly",
    "prompt": "context in prompt (no adapter)",
}
def arm_label(arm: str) -> str:
    """A person's name for an arm; decoded variants say how they were decoded."""
    base, sfx = decoded_arm(arm)
    stem, sep, factor = base.partition("_x")
    if sep and stem in ("own", "average"):  # hypernet.amplify
        return f"{ARM_LABEL[stem]}, repository-specific part x{factor}" + describe_arm_suffix(sfx)
    return ARM_LABEL.get(base, base) + describe_arm_suffix(sfx)


METRICS = (("loss", "chunk", "next-token loss"), ("ident_loss", "chunk", "loss on repo-identifier tokens"),
           ("em", "line", "line EM (teacher-forced)"), ("es", "line", "line_edit_sim_teacher_forced"),
           ("em", "assert", "assertion EM"))


def rows(raw: dict[str, Any], tok: Any) -> dict[str, list[dict[str, Any]]]:
    """arm -> list of {repo, idx, kind, metrics...} (one per scored sequence)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for res in raw["results"]:
        for arm, seq_results in res["arms"].items():
            for idx, (seq, r) in enumerate(zip(res["seqs"], seq_results, strict=False)):
                out.setdefault(arm, []).append({"repo": res["repo"], "idx": idx, "kind": seq.kind,
                                                **seq_metrics(tok, seq, r)})
        for idx, r in enumerate(res["prompt"]):
            seq = res["seqs"][idx]
            out.setdefault("prompt", []).append({"repo": res["repo"], "idx": idx, "kind": seq.kind,
                                                 **seq_metrics(tok, seq, r)})
    return out


def _values(rs: list[dict], metric: str, kind: str) -> tuple[list[float], list[str], list[tuple[str, int]]]:
    sel = [r for r in rs if r["kind"] == kind and r.get(metric) is not None]
    return [r[metric] for r in sel], [r["repo"] for r in sel], [(r["repo"], r["idx"]) for r in sel]


def arm_order(by_arm: dict[str, Any]) -> list[str]:
    """The standard arms in their fixed order (each followed by its decoded variants, "own+vocab"), then any
    extra arms (`EvalOptions.extra_arms`) by name."""
    def key(arm: str) -> tuple[int, str, str]:
        base, sfx = decoded_arm(arm)
        return (ARM_ORDER.index(base) if base in ARM_ORDER else len(ARM_ORDER), base, sfx)

    return sorted(by_arm, key=key)


def arm_table(by_arm: dict[str, list[dict]], n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per arm and metric: mean, 95% interval, n."""
    table: dict[str, dict[str, Any]] = {}
    for arm in arm_order(by_arm):
        if arm not in by_arm:
            continue
        table[arm] = {}
        for metric, kind, _label in METRICS:
            vals, _groups, _keys = _values(by_arm[arm], metric, kind)
            m, lo, hi = bootstrap_ci(vals, n=n_boot, seed=seed)
            table[arm][f"{kind}.{metric}"] = {"mean": m, "lo": lo, "hi": hi, "n": len(vals)}
    return table


def paired(by_arm: dict[str, list[dict]], a: str, b: str, metric: str, kind: str, n_boot: int, seed: int) -> dict:
    """mean(a - b) over sequences scored by both arms, with sequence-level and repository-cluster intervals."""
    if a not in by_arm or b not in by_arm:
        return {}
    va, _, ka = _values(by_arm[a], metric, kind)
    vb, _, kb = _values(by_arm[b], metric, kind)
    mb = dict(zip(kb, vb, strict=False))
    pairs = [(x, mb[k], k[0]) for x, k in zip(va, ka, strict=False) if k in mb]
    if not pairs:
        return {}
    diffs = [x - y for x, y, _ in pairs]
    groups = [g for _, _, g in pairs]
    seq_ci = bootstrap_ci(diffs, n=n_boot, seed=seed)
    repo_ci = bootstrap_ci(diffs, groups=groups, n=n_boot, seed=seed)
    return {"a": a, "b": b, "metric": f"{kind}.{metric}", "n": len(diffs), "repos": len(set(groups)),
            "mean_a": float(np.mean([x for x, _, _ in pairs])), "mean_b": float(np.mean([y for _, y, _ in pairs])),
            "diff": seq_ci[0], "seq_ci": [seq_ci[1], seq_ci[2]], "repo_ci": [repo_ci[1], repo_ci[2]],
            "excludes_zero_seq": excludes_zero(seq_ci), "excludes_zero_repo": excludes_zero(repo_ci),
            "wins": sum(d < 0 for d in diffs), "losses": sum(d > 0 for d in diffs)}


COMPARISONS = (
    ("own", "base", "loss", "chunk"), ("own", "base", "ident_loss", "chunk"),
    ("own", "average", "ident_loss", "chunk"), ("own", "other", "ident_loss", "chunk"),
    ("own", "average", "loss", "chunk"), ("own", "other", "loss", "chunk"),
    ("own", "shared_lora", "loss", "chunk"), ("own", "shared_lora", "ident_loss", "chunk"),
    ("average", "base", "loss", "chunk"),
    ("per_repo_lora", "own", "loss", "chunk"), ("per_repo_lora", "own", "ident_loss", "chunk"),
    ("prompt", "own", "loss", "chunk"), ("prompt", "own", "ident_loss", "chunk"),
    ("prompt", "base", "loss", "chunk"), ("prompt", "base", "ident_loss", "chunk"),
    ("own", "base", "em", "line"), ("own", "base", "es", "line"), ("own", "base", "em", "assert"),
)


def amplified_control(arm: str, bases: Container[str]) -> str:
    """The control of an amplified arm "own_xA": "average_xA" when the run has it (a fixed reference), else the
    plain average adapter (the reference itself)."""
    twin = "average" + arm[len("own"):]
    return twin if twin in bases else "average"


def extra_comparisons(by_arm: dict[str, Any]) -> tuple[tuple[str, str, str, str], ...]:
    """Each extra arm against the generated adapter it started from, and against the base model."""
    out = [(x, b, m, "chunk") for x in by_arm if x not in ARM_ORDER
           for b in ("own", "base") for m in ("loss", "ident_loss")]
    for x in (a for a in by_arm if a.startswith("own_x")):  # amplified: against its average and the shared LoRA
        out += [(x, c, m, "chunk") for c in (amplified_control(x, by_arm), "shared_lora") if c in by_arm
                for m in ("loss", "ident_loss")]
    return tuple(out)


GEN_COMPARISONS = (("own", "base"), ("own", "average"), ("own", "other"), ("per_repo_lora", "base"))
SIDE_BY_SIDE_ARMS = ("own", "base", "other", "own+vocab", "base+vocab", "own+vocab+beam4", "base+vocab+beam4")


def decoded_arm(arm: str) -> tuple[str, str]:
    """"own+vocab3" -> ("own", "+vocab3"); a plain arm has an empty suffix."""
    base, sep, rest = arm.partition("+")
    return base, sep + rest


def gen_pairs(arms: Iterable[str]) -> list[tuple[str, str]]:
    """The generation comparisons present among `arms`: own against base / average / other under each decoding,
    each repository-vocabulary decoding against plain base and plain own (what the decoding buys) and extra
    arms (other checkpoints) against own."""
    names = list(arms)
    suffixes = sorted({decoded_arm(a)[1] for a in names} - {""})
    pairs = list(GEN_COMPARISONS)
    for sfx in suffixes:
        pairs += [(a + sfx, b + sfx) for a, b in GEN_COMPARISONS]
        pairs += [("own" + sfx, "base"), ("own" + sfx, "own"), ("base" + sfx, "base")]
        parsed = parse_arm_suffix(sfx)
        if parsed and parsed[1]:  # what the whole-name beam buys over the same mask without it
            plain = vocab_arm_suffix(parsed[0])
            pairs += [("own" + sfx, "own" + plain), ("base" + sfx, "base" + plain)]
    pairs += [("own", x) for x in names if x not in ARM_ORDER and not decoded_arm(x)[1]]
    bases = {decoded_arm(a)[0] for a in names}
    for x in sorted(b for b in bases if b.startswith("own_x")):  # amplified (hypernet.amplify)
        control = amplified_control(x, bases)
        for sfx in [""] + suffixes:
            pairs += [(x + sfx, "base" + sfx), (x + sfx, "own" + sfx), (x + sfx, control + sfx)]
    return [(a, b) for a, b in pairs if a in names and b in names]


def _ci(vals: list[float], groups: list[str], n_boot: int, seed: int) -> dict[str, Any]:
    """Mean with a 95% interval over repositories (cluster bootstrap)."""
    m, lo, hi = bootstrap_ci(vals, groups=groups, n=n_boot, seed=seed)
    return {"mean": m, "lo": lo, "hi": hi, "n": len(vals), "repos": len(set(groups))}


def _paired_gen(a_vals: list[float], b_vals: list[float], groups: list[str], a: str, b: str, metric: str,
                n_boot: int, seed: int) -> dict[str, Any]:
    """mean(a - b) over the same cut points (or lines), intervals over items and over repositories."""
    diffs = [x - y for x, y in zip(a_vals, b_vals, strict=False)]
    seq_ci = bootstrap_ci(diffs, n=n_boot, seed=seed)
    repo_ci = bootstrap_ci(diffs, groups=groups, n=n_boot, seed=seed)
    return {"a": a, "b": b, "metric": metric, "n": len(diffs), "repos": len(set(groups)),
            "mean_a": float(np.mean(a_vals)), "mean_b": float(np.mean(b_vals)), "diff": seq_ci[0],
            "seq_ci": [seq_ci[1], seq_ci[2]], "repo_ci": [repo_ci[1], repo_ci[2]],
            "excludes_zero_seq": excludes_zero(seq_ci), "excludes_zero_repo": excludes_zero(repo_ci),
            "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs)}


def generation_report(raw: dict[str, Any], n_boot: int, seed: int) -> dict[str, Any] | None:
    """Generated-completion metrics (identifier EM, invented rate, generated lines) per arm with intervals over
    repositories, the in-prompt split, and paired differences own − base / average / other; None when the run
    generated nothing."""
    results = [r for r in raw["results"] if r.get("generation")]
    if not results:
        return None
    out: dict[str, Any] = {"modes": {}, "lines": {}, "line_comparisons": []}
    modes = [m for m in ("boundary", "inside") if any(m in r["generation"]["ident"] for r in results)]
    for mode in modes:
        per_arm: dict[str, list[tuple[str, dict]]] = {}
        for r in results:
            for arm, m in r["generation"]["ident"].get(mode, {}).items():
                per_arm.setdefault(arm, []).extend((r["repo"], rec) for rec in m["records"])
        arms: dict[str, Any] = {}
        for arm in arm_order(per_arm):
            recs = per_arm[arm]
            groups = [g for g, _ in recs]
            cell = {"ident_em": _ci([x["em"] for _, x in recs], groups, n_boot, seed),
                    "invented_rate": _ci([x["invented"] for _, x in recs], groups, n_boot, seed)}
            for key, flag in (("ident_em_in_prompt", True), ("ident_em_not_in_prompt", False)):
                sel = [(g, x) for g, x in recs if x["in_prompt"] == flag]
                cell[key] = _ci([x["em"] for _, x in sel], [g for g, _ in sel], n_boot, seed)
            arms[arm] = cell
        any_arm = next(iter(per_arm.values()), [])
        comps = []
        pairs = gen_pairs(per_arm)
        for key, metric in (("em", "ident_em"), ("invented", "invented_rate")):
            for a, b in pairs:
                if a in per_arm and b in per_arm and per_arm[a]:
                    groups = [g for g, _ in per_arm[a]]
                    comps.append(_paired_gen([x[key] for _, x in per_arm[a]], [x[key] for _, x in per_arm[b]],
                                             groups, a, b, f"{mode}.{metric}", n_boot, seed))
        out["modes"][mode] = {"arms": arms, "comparisons": comps, "n_cuts": len(any_arm),
                              "in_prompt_share": float(np.mean([x["in_prompt"] for _, x in any_arm])) if any_arm
                              else math.nan}
    line_arm: dict[str, list[tuple[str, dict]]] = {}
    for r in results:
        for arm, m in r["generation"]["lines"].items():
            line_arm.setdefault(arm, []).extend((r["repo"], rec) for rec in m["records"])
    for arm in arm_order(line_arm):
        groups = [g for g, _ in line_arm[arm]]
        out["lines"][arm] = {"line_em": _ci([x["em"] for _, x in line_arm[arm]], groups, n_boot, seed),
                             "line_edit_sim": _ci([x["edit_sim"] for _, x in line_arm[arm]], groups, n_boot, seed)}
    for a, b in [p for p in gen_pairs(line_arm) if p[1] == "base" or p[0].endswith(p[1])]:
        if line_arm[a]:
            groups = [g for g, _ in line_arm[a]]
            for key, metric in (("em", "line_em"), ("edit_sim", "line_edit_sim")):
                out["line_comparisons"].append(_paired_gen([x[key] for _, x in line_arm[a]],
                                                           [x[key] for _, x in line_arm[b]], groups, a, b,
                                                           f"generated.{metric}", n_boot, seed))
    return out


def side_by_side_samples(raw: dict[str, Any], per_repo: int = 3, prompt_lines: int = 6) -> list[dict[str, Any]]:
    """Per repository, up to `per_repo` cut points of the first cut mode (targets absent from the prompt first):
    the last lines of the prompt, the expected identifier, and the completions of own / base / another
    repository's adapter."""
    out = []
    for r in raw["results"]:
        gen = r.get("generation")
        if not gen or not gen["ident"]:
            continue
        mode = next(iter(gen["ident"]))
        arms = {a: gen["ident"][mode][a]["records"] for a in SIDE_BY_SIDE_ARMS if a in gen["ident"][mode]}
        cuts = gen["cuts"][mode]
        order = sorted(range(len(cuts)), key=lambda k: (cuts[k].in_prompt, k))[:per_repo]
        for k in order:
            c = cuts[k]
            out.append({"repo": r["repo"], "path": c.path, "line": c.line, "mode": mode, "target": c.target,
                        "partial": c.partial, "in_prompt": c.in_prompt,
                        "prompt_tail": "\n".join(c.prefix_text.split("\n")[-prompt_lines:]),
                        "completions": {a: {key: recs[k][key] for key in ("completion", "predicted", "em", "invented")}
                                        for a, recs in arms.items()}})
    return out


def side_by_side_markdown(samples: list[dict[str, Any]]) -> str:
    """side_by_side.md: one block per cut point."""
    lines = ["# Side by side: identifier completion at cut points", "",
             "Each block: the end of the prompt (the cut is at its end), the expected identifier, and the greedy "
             "completion of each adapter (✓ exact match, ✗ invented identifier).", ""]
    repo = None
    for s in samples:
        if s["repo"] != repo:
            repo = s["repo"]
            lines += [f"## {repo}", ""]
        where = "in the prompt window" if s["in_prompt"] else "not in the prompt window"
        lines += [f"`{s['path']}` line {s['line']} ({s['mode']} cut), expected **`{s['target']}`** ({where})", "",
                  "```python", s["prompt_tail"] + "⟂", "```", "", "| adapter | completion | identifier |",
                  "|---|---|---|"]
        for arm, c in s["completions"].items():
            comp = c["completion"].replace("\n", "⏎").replace("|", "\\|").replace("`", "'")
            mark = " ✓" if c["em"] else (" ✗" if c["invented"] else "")
            lines.append(f"| {arm_label(arm)} | `{comp}` | {c['predicted'] or '–'}{mark} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def build_report(raw: dict[str, Any], tok: Any, *, n_boot: int = 2000, seed: int = 0,
                 meta: dict[str, Any] | None = None, side_by_side: int = 3) -> dict[str, Any]:
    """The JSON report."""
    by_arm = rows(raw, tok)
    adapters = raw["adapters"]
    names = [r["repo"] for r in raw["results"]]
    dcos = delta_cosine_matrix(adapters) if len(adapters) > 1 else np.ones((1, 1))
    pcos = param_cosine_matrix(adapters) if len(adapters) > 1 else np.ones((1, 1))
    t = raw["timings"]
    report = {
        "meta": meta or {},
        "repos": names,
        "arms": arm_table(by_arm, n_boot, seed),
        "comparisons": [c for c in (paired(by_arm, a, b, m, k, n_boot, seed)
                                    for a, b, m, k in COMPARISONS + extra_comparisons(by_arm)) if c],
        "cosine": {"delta_w": dcos.tolist(), "params": pcos.tolist(),
                   "mean_offdiag_delta_w": mean_offdiag(dcos), "mean_offdiag_params": mean_offdiag(pcos)},
        "timings": {
            "generate_ms_mean": float(np.mean(t.get("encode_ms", [0])) + np.mean(t["hypernet_forward_ms"])),
            "encode_ms_mean": float(np.mean(t.get("encode_ms", [math.nan]))),
            "hypernet_forward_ms_mean": float(np.mean(t["hypernet_forward_ms"])),
            "per_repo_lora_s_mean": float(np.mean(t["per_repo_lora_s"])) if t["per_repo_lora_s"] else math.nan,
            "per_repo_lora_steps": t.get("per_repo_lora_steps"),
        },
        "prompt_tokens_mean": float(np.mean([r["prompt_tokens"] for r in raw["results"]])),
        "per_repo": per_repo(by_arm, names),
    }
    ranks = raw.get("own_rank")
    if ranks and ranks["repos"]:
        report["own_rank"] = {"n_adapters": ranks["n_adapters"], "chance": ranks["chance"],
                              "mean_loss_rank": float(np.mean(ranks["loss"])),
                              "mean_ident_loss_rank": float(np.mean(ranks["ident_loss"])),
                              "per_repo": {r: {"loss": a, "ident_loss": b}
                                           for r, a, b in zip(ranks["repos"], ranks["loss"], ranks["ident_loss"], strict=False)}}
    generation = generation_report(raw, n_boot, seed)
    if generation is not None:
        report["generation"] = generation
        report["side_by_side"] = side_by_side_samples(raw, side_by_side)
        report["timings"]["generation_s_mean"] = float(np.mean(t.get("generation_s") or [math.nan]))
    return report


def per_repo(by_arm: dict[str, list[dict]], names: list[str]) -> dict[str, dict[str, float]]:
    """Mean chunk loss and identifier loss per repository and arm."""
    out: dict[str, dict[str, float]] = {}
    for name in names:
        out[name] = {}
        for arm, rs in by_arm.items():
            for metric in ("loss", "ident_loss"):
                vals = [r[metric] for r in rs if r["repo"] == name and r["kind"] == "chunk" and r.get(metric) is not None]
                if vals and arm != "prompt":
                    out[name][f"{arm}.{metric}"] = float(np.mean(vals))
    return out


def _fmt(c: dict) -> str:
    if not c or c.get("n", 0) == 0 or c["mean"] != c["mean"]:
        return "–"
    return f"{c['mean']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"


def markdown(report: dict[str, Any]) -> str:
    """Markdown tables of the report."""
    lines = ["| arm | " + " | ".join(label for _, _, label in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for arm, cells in report["arms"].items():
        lines.append(f"| {arm_label(arm)} | " + " | ".join(_fmt(cells.get(f"{k}.{m}", {})) for m, k, _ in METRICS) + " |")
    lines.append("")
    lines.append("Sequence counts (n) per metric: " + ", ".join(
        f"{k}.{m}={report['arms'].get('own', report['arms'].get('base', {})).get(f'{k}.{m}', {}).get('n', 0)}"
        for m, k, _ in METRICS) + ".")
    lines += ["", "| comparison (a − b) | metric | n seqs (repos) | mean a | mean b | diff | 95% CI (sequences) | "
              "95% CI (repos) | a better on |", "|---|---|---|---|---|---|---|---|---|"]
    for c in report["comparisons"]:
        lower_better = not c["metric"].endswith((".em", ".es"))
        wins = c["wins"] if lower_better else c["losses"]
        mark = " **✓**" if c["excludes_zero_seq"] and ((c["diff"] < 0) == lower_better) else ""
        lines.append(f"| {c['a']} − {c['b']} | {c['metric']} | {c['n']} ({c['repos']}) | {c['mean_a']:.3f} | "
                     f"{c['mean_b']:.3f} | {c['diff']:+.3f}{mark} | [{c['seq_ci'][0]:+.3f}, {c['seq_ci'][1]:+.3f}] | "
                     f"[{c['repo_ci'][0]:+.3f}, {c['repo_ci'][1]:+.3f}] | {wins}/{c['n']} |")
    cos = report["cosine"]
    t = report["timings"]
    lines += ["", f"Mean off-diagonal cosine between generated adapters: ΔW = BA {cos['mean_offdiag_delta_w']:.3f}, "
              f"raw (A, B) parameters {cos['mean_offdiag_params']:.3f}.", "",
              f"Generated adapter: {t['generate_ms_mean']:.0f} ms per repository (encode {t['encode_ms_mean']:.0f} ms + "
              f"hypernet forward {t['hypernet_forward_ms_mean']:.1f} ms). Per-repository LoRA: "
              f"{t['per_repo_lora_s_mean']:.1f} s each ({t['per_repo_lora_steps']} steps, including its forward passes). "
              f"Context in prompt: {report['prompt_tokens_mean']:.0f} extra prompt tokens per sequence."]
    if report.get("own_rank"):
        r = report["own_rank"]
        lines += ["", f"Mean rank of the own adapter among the {r['n_adapters']} generated adapters on each repository's "
                  f"chunks (1 = lowest loss, chance {r['chance']:.1f}): {r['mean_ident_loss_rank']:.2f} on "
                  f"repo-identifier tokens, {r['mean_loss_rank']:.2f} on all tokens."]
    if report.get("generation"):
        lines += ["", *generation_markdown(report["generation"], report["timings"].get("generation_s_mean"))]
    return "\n".join(lines) + "\n"


def _cmp_rows(comps: list[dict]) -> list[str]:
    rows = ["| comparison (a − b) | metric | n (repos) | mean a | mean b | diff | 95% CI (items) | 95% CI (repos) | "
            "a better on |", "|---|---|---|---|---|---|---|---|---|"]
    for c in comps:
        lower_better = c["metric"].endswith("invented_rate")  # for the rate of invented names, lower is better
        better = c["diff"] < 0 if lower_better else c["diff"] > 0
        mark = " **✓**" if c["excludes_zero_repo"] and better else ""
        wins = c["losses"] if lower_better else c["wins"]
        rows.append(f"| {c['a']} − {c['b']} | {c['metric']} | {c['n']} ({c['repos']}) | {c['mean_a']:.3f} | "
                    f"{c['mean_b']:.3f} | {c['diff']:+.3f}{mark} | [{c['seq_ci'][0]:+.3f}, {c['seq_ci'][1]:+.3f}] | "
                    f"[{c['repo_ci'][0]:+.3f}, {c['repo_ci'][1]:+.3f}] | {wins}/{c['n']} |")
    return rows


def generation_markdown(gen: dict[str, Any], seconds: float | None = None) -> list[str]:
    """The generated-completion section of report.md (intervals over repositories)."""
    out = ["## What a user sees: generated completions (greedy; 95% intervals over repositories)", ""]
    for mode, m in gen["modes"].items():
        out += [f"Identifier completion, {mode} cuts: {m['n_cuts']} cut points; the target identifier occurs in the "
                f"prompt window for {m['in_prompt_share']:.0%} of them.", "",
                "| arm | identifier EM | invented rate | EM, target in prompt | EM, target not in prompt |",
                "|---|---|---|---|---|"]
        for arm, cell in m["arms"].items():
            out.append(f"| {arm_label(arm)} | {_fmt(cell['ident_em'])} | {_fmt(cell['invented_rate'])} | "
                       f"{_fmt(cell['ident_em_in_prompt'])} (n={cell['ident_em_in_prompt']['n']}) | "
                       f"{_fmt(cell['ident_em_not_in_prompt'])} (n={cell['ident_em_not_in_prompt']['n']}) |")
        out += [""] + (_cmp_rows(m["comparisons"]) + [""] if m["comparisons"] else [])
    if gen["lines"]:
        out += ["Generated next line (greedy rest of the line, not teacher-forced):", "",
                "| arm | line EM | line edit sim. |", "|---|---|---|"]
        for arm, cell in gen["lines"].items():
            out.append(f"| {arm_label(arm)} | {_fmt(cell['line_em'])} | {_fmt(cell['line_edit_sim'])} |")
        out += [""] + (_cmp_rows(gen["line_comparisons"]) + [""] if gen["line_comparisons"] else [])
    if seconds is not None and seconds == seconds:
        out.append(f"Generation took {seconds:.1f} s per repository (all arms). Samples: side_by_side.md.")
    return out


def plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Bar chart of the loss metrics per arm (with intervals) and the adapter cosine heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    arms = list(report["arms"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, title in ((axes[0], "chunk.loss", "held-out next-token loss"),
                           (axes[1], "chunk.ident_loss", "loss on repo-defined identifier tokens")):
        means = [report["arms"][a][key]["mean"] for a in arms]
        err = [[m - report["arms"][a][key]["lo"] for a, m in zip(arms, means, strict=False)],
               [report["arms"][a][key]["hi"] - m for a, m in zip(arms, means, strict=False)]]
        ax.bar(range(len(arms)), means, yerr=err, capsize=4,
               color=["#999", "#c90", "#2a7", "#58c", "#c55", "#737", "#aa5"][: len(arms)])
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=30, ha="right")
        lo = min(report["arms"][a][key]["lo"] for a in arms)
        ax.set_ylim(max(0.0, lo - 0.3), None)
        ax.set_title(title + " (95% CI)")
    fig.tight_layout()
    p = out_dir / "eval_arms.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    m = np.array(report["cosine"]["delta_w"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(m, vmin=min(0.0, float(m.min())), vmax=1.0, cmap="viridis")
    names = [n.split("/", 1)[-1] for n in report["repos"]]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_title("cosine of generated ΔW between repositories")
    fig.colorbar(im)
    fig.tight_layout()
    p = out_dir / "eval_cosine.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and the plots into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    pngs = plots(report, out_dir)
    files = {"json": out_dir / "report.json", "md": out_dir / "report.md", **{p.stem: p for p in pngs}}
    if report.get("side_by_side"):
        (out_dir / "side_by_side.md").write_text(side_by_side_markdown(report["side_by_side"]))
        files["side_by_side"] = out_dir / "side_by_side.md"
    return files
