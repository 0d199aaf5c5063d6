"""Update geometry: for each module's update dW (LoRA scale * B @ A, or a full-weight delta W - W0):
effective rank, stable rank, share of weights changed, concentration of the update mass, overlap of dW's top-k
singular subspace with the pretrained W0's top-k subspace, and principal angles between the update subspaces of
successive checkpoints (subspace locking). Definitions: docs/TRAINING.md."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

# An update factored as U diag(S) Vh (thin SVD, S descending).
SVD = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def effective_rank(s: torch.Tensor) -> float:
    """exp(entropy of s / sum(s)) (Roy & Vetterli); 0 for an all-zero spectrum."""
    s = s.double().clamp_min(0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(s: torch.Tensor) -> float:
    """||dW||_F^2 / ||dW||_2^2 from the singular values; 0 for an all-zero spectrum."""
    s = s.double()
    return float((s ** 2).sum() / s[0] ** 2) if s.numel() and s[0] > 0 else 0.0


def changed_fraction(dw: torch.Tensor, w0: torch.Tensor | None = None, rel: float = 1e-2, floor: float = 1e-6) -> float:
    """Share of entries with |dW_ij| > max(rel * |W0_ij|, floor) (with no W0: > floor)."""
    thr = torch.full_like(dw, floor) if w0 is None else (rel * w0.abs()).clamp_min(floor)
    return float((dw.abs() > thr).float().mean())


def top_mass(dw: torch.Tensor, share: float = 0.01) -> float:
    """Share of ||dW||_F^2 held by the largest `share` of entries (scale-free concentration; `share` = uniform)."""
    sq = dw.flatten().double() ** 2
    total = sq.sum()
    if total <= 0:
        return 0.0
    k = max(1, int(share * sq.numel()))
    return float(sq.topk(k).values.sum() / total)


def svd(dw: torch.Tensor) -> SVD:
    """Thin SVD of a dense matrix (float64 for stable small singular values)."""
    u, s, vh = torch.linalg.svd(dw.double(), full_matrices=False)
    return u, s, vh


def lora_svd(a: torch.Tensor, b: torch.Tensor, scaling: float) -> SVD:
    """Thin SVD of scaling * B @ A through QR of the factors: r x r work instead of out x in."""
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(scaling * rb @ ra.T)
    return qb @ u, s, vh @ qa.T


def subspace_overlap(u1: torch.Tensor, u2: torch.Tensor) -> float:
    """||U1^T U2||_F^2 / k for two orthonormal k-column bases (0 orthogonal, 1 same; random ~ k / d)."""
    k = min(u1.shape[1], u2.shape[1])
    if k == 0:
        return 0.0
    return float((u1[:, :k].T.double() @ u2[:, :k].double()).pow(2).sum() / k)


def principal_angles(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Principal angles (degrees, ascending) between the column spans of two orthonormal bases."""
    cos = torch.linalg.svdvals(u1.T.double() @ u2.double()).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cos)).sort().values


def _rank_k(s: torch.Tensor, k: int) -> int:
    # Only directions that carry update energy count: a rank-r LoRA has at most r.
    nz = int((s > s[0] * 1e-6).sum()) if s.numel() and s[0] > 0 else 0
    return max(1, min(k, nz))


@dataclass
class ModuleGeometry:
    """Geometry numbers of one module's update."""

    path: str
    module_type: str
    layer: int
    fro: float
    effective_rank: float
    stable_rank: float
    changed_frac: float
    top1pct_mass: float
    overlap_left: float  # top-k left singular subspace of dW vs of W0
    overlap_right: float
    random_overlap: float  # the same number for a random subspace: k / d (left)


def module_geometry(path: str, dw: torch.Tensor, w0: torch.Tensor, k: int = 8, dw_svd: SVD | None = None,
                    w0_svd: SVD | None = None, rel: float = 1e-2, floor: float = 1e-6) -> ModuleGeometry:
    """All single-update numbers for one module."""
    import re

    u, s, vh = dw_svd or svd(dw)
    u0, _s0, vh0 = w0_svd or svd(w0)
    kk = _rank_k(s, k)
    m = re.search(r"layers\.(\d+)\.", path)
    return ModuleGeometry(
        path=path, module_type=path.rsplit(".", 1)[-1], layer=int(m.group(1)) if m else -1,
        fro=float(s.pow(2).sum().sqrt()), effective_rank=effective_rank(s), stable_rank=stable_rank(s),
        changed_frac=changed_fraction(dw.float(), w0.float(), rel, floor), top1pct_mass=top_mass(dw),
        overlap_left=subspace_overlap(u0[:, :kk], u[:, :kk]), overlap_right=subspace_overlap(vh0[:kk].T, vh[:kk].T),
        random_overlap=kk / dw.shape[0])


# ---------------------------------------------------------------------------------------------- checkpoints

@dataclass
class Update:
    """One checkpoint's update: per module (dense dW, its SVD); where it came from."""

    source: str
    step: int
    method: str
    dense: dict[str, torch.Tensor]
    svds: dict[str, SVD]


def load_update(path: Path) -> Update:
    """A checkpoint folder (with `adapter/` or `delta.safetensors`), or a PEFT adapter folder."""
    path = Path(path)
    meta_path = path / "ckpt_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    dense: dict[str, torch.Tensor] = {}
    svds: dict[str, SVD] = {}
    adapter = path / "adapter" if (path / "adapter").is_dir() else path
    if (path / "delta.safetensors").is_file():
        from safetensors.torch import load_file

        for p, d in load_file(str(path / "delta.safetensors")).items():
            dense[p] = d.double()
            svds[p] = svd(d)
    elif (adapter / "adapter_model.safetensors").is_file():
        from hypernet.adapter import read_adapter, scaling

        config, tensors = read_adapter(adapter)
        scale = scaling(config)
        for p, (a, b) in tensors.items():
            dense[p] = scale * b.double() @ a.double()
            svds[p] = lora_svd(a, b, scale)
    else:
        raise FileNotFoundError(f"{path}: no adapter/ or delta.safetensors")
    return Update(str(path), int(meta.get("step", -1)), str(meta.get("method", "")), dense, svds)


def checkpoint_dirs(run_or_ckpt: Path, max_step: int | None = None) -> list[Path]:
    """A run folder's checkpoints/step-* in step order (up to `max_step`), or [the path] for a single checkpoint."""
    p = Path(run_or_ckpt)
    if (p / "checkpoints").is_dir():
        dirs = sorted(d for d in (p / "checkpoints").iterdir() if d.is_dir() and d.name.startswith("step-"))
        return [d for d in dirs if max_step is None or int(d.name.split("-")[1]) <= max_step]
    return [p]


def locking_curve(updates: list[Update], k: int = 8) -> list[dict[str, float]]:
    """Per checkpoint: mean over modules of the top-k left-subspace overlap with the final update, with the previous
    checkpoint, and the mean smallest/largest principal angle to the final subspace (zero updates skipped)."""
    final = updates[-1]
    out = []
    prev: Update | None = None
    for up in updates:
        to_final, to_prev, amin, amax = [], [], [], []
        for p, (u, s, _vh) in up.svds.items():
            if not s.numel() or s[0] <= 0 or p not in final.svds:
                continue
            uf, sf, _ = final.svds[p]
            kk = min(_rank_k(s, k), _rank_k(sf, k))
            to_final.append(subspace_overlap(u[:, :kk], uf[:, :kk]))
            ang = principal_angles(u[:, :kk], uf[:, :kk])
            amin.append(float(ang[0]))
            amax.append(float(ang[-1]))
            if prev is not None and p in prev.svds and prev.svds[p][1].numel() and prev.svds[p][1][0] > 0:
                up_, sp, _ = prev.svds[p]
                kp = min(_rank_k(s, k), _rank_k(sp, k))
                to_prev.append(subspace_overlap(u[:, :kp], up_[:, :kp]))
        mean = (lambda xs: sum(xs) / len(xs) if xs else float("nan"))
        out.append({"step": up.step, "overlap_final": mean(to_final), "overlap_prev": mean(to_prev),
                    "angle_min_final": mean(amin), "angle_max_final": mean(amax)})
        prev = up
    return out


def relative_to_start(updates: list[Update]) -> tuple[list[Update], bool]:
    """A run that started from a non-zero adapter (e.g. a generated one): every update minus the step-0 one, so
    the geometry is that of what training changed. Runs that start at zero are returned as they are."""
    first = updates[0] if updates else None
    if first is None or first.step != 0 or not any(float(d.abs().max()) > 0 for d in first.dense.values()):
        return updates, False
    out = []
    for up in updates[1:] or updates:
        dense = {p: d - first.dense[p] if p in first.dense else d for p, d in up.dense.items()}
        out.append(Update(up.source, up.step, up.method, dense, {p: svd(d) for p, d in dense.items()}))
    return out, True


def base_weights(base_model: str | None, paths: list[str]) -> dict[str, torch.Tensor]:
    """W0 of the given module paths, read from the base model's safetensors (no model built)."""
    from safetensors import safe_open

    from hypernet.basemodel import resolve_model_dir

    want = {f"{p}.weight": p for p in paths}
    out: dict[str, torch.Tensor] = {}
    for file in sorted(resolve_model_dir(base_model).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key in want:
                    out[want[key]] = f.get_tensor(key).double()
    missing = sorted(set(paths) - set(out))
    if missing:
        raise KeyError(f"base weights missing for {missing[:3]}")
    return out


def summarize_modules(mods: list[ModuleGeometry]) -> dict[str, float]:
    """Means over modules (zero updates skipped)."""
    live = [m for m in mods if m.fro > 0]
    if not live:
        return {}
    keys = ("fro", "effective_rank", "stable_rank", "changed_frac", "top1pct_mass", "overlap_left", "overlap_right",
            "random_overlap")
    return {k: sum(getattr(m, k) for m in live) / len(live) for k in keys} | {"modules": len(live)}


def analyze_run(run: Path, base_model: str | None = None, k: int = 8, rel: float = 1e-2,
                w0_cache: dict[str, tuple[torch.Tensor, SVD]] | None = None, max_step: int | None = None
                ) -> dict[str, Any]:
    """Geometry of a run's final update (or the last one up to `max_step`; per module, averaged, per module type)
    and its subspace-locking curve."""
    dirs = checkpoint_dirs(run, max_step)
    updates, relative = relative_to_start([load_update(d) for d in dirs])
    final = updates[-1]
    meta_base = base_model
    if meta_base is None:
        meta_path = Path(dirs[-1]) / "ckpt_meta.json"
        meta_base = json.loads(meta_path.read_text()).get("base_model") if meta_path.is_file() else None
    cache = w0_cache if w0_cache is not None else {}
    need = [p for p in final.dense if p not in cache]
    if need:
        for p, w in base_weights(meta_base, need).items():
            cache[p] = (w, svd(w))
    mods = [module_geometry(p, final.dense[p], cache[p][0], k, final.svds[p], cache[p][1], rel)
            for p in sorted(final.dense)]
    by_type: dict[str, list[ModuleGeometry]] = {}
    for m in mods:
        by_type.setdefault(m.module_type, []).append(m)
    return {"run": str(run), "method": final.method, "step": final.step, "k": k, "rel_threshold": rel,
            "relative_to_start": relative,
            "summary": summarize_modules(mods), "by_type": {t: summarize_modules(v) for t, v in sorted(by_type.items())},
            "modules": [asdict(m) for m in mods], "locking": locking_curve(updates, k) if len(updates) > 1 else []}


def label_of(report: dict[str, Any]) -> str:
    """Short label of a run report: its folder name."""
    return Path(report["run"]).name or report["method"]


def plot_reports(reports: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """geometry_layers.png (per-layer effective rank, W0 overlap, changed share) and geometry_locking.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(1, 4, figsize=(18, 3.8))
    for rep in reports:
        layers = sorted({m["layer"] for m in rep["modules"]})
        per = {l: [m for m in rep["modules"] if m["layer"] == l and m["fro"] > 0] for l in layers}
        mean = (lambda ms, key: sum(m[key] for m in ms) / len(ms) if ms else math.nan)
        for a, key in zip(ax, ("effective_rank", "overlap_left", "changed_frac", "top1pct_mass"), strict=False):
            a.plot(layers, [mean(per[l], key) for l in layers], marker=".", label=label_of(rep))
    if reports and reports[0]["modules"]:
        rnd = sum(m["random_overlap"] for m in reports[0]["modules"]) / len(reports[0]["modules"])
        ax[1].axhline(rnd, color="k", ls=":", label="random subspace")
    for a, title in zip(ax, ("effective rank of dW", "overlap with W0 top-k (left)", "share of weights changed",
                             "share of ||dW||^2 in top 1% entries"), strict=False):
        a.set_title(title, fontsize=10)
        a.set_xlabel("layer")
        a.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "geometry_layers.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)
    if any(rep["locking"] for rep in reports):
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
        for rep in reports:
            lk = [r for r in rep["locking"] if r["overlap_final"] == r["overlap_final"]]
            ax[0].plot([r["step"] for r in lk], [r["overlap_final"] for r in lk], marker="o", label=label_of(rep))
            lp = [r for r in lk if r["overlap_prev"] == r["overlap_prev"]]
            ax[1].plot([r["step"] for r in lp], [r["overlap_prev"] for r in lp], marker="o", label=label_of(rep))
        ax[0].set_title("top-k update subspace: overlap with the final one", fontsize=10)
        ax[1].set_title("overlap with the previous checkpoint", fontsize=10)
        for a in ax:
            a.set_xlabel("step")
            a.set_ylim(0, 1.05)
            a.legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / "geometry_locking.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths


def write_report(reports: list[dict[str, Any]], out_dir: Path) -> Path:
    """report.json (everything) and report.md (a table of the summaries and the locking curves)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(reports, indent=1) + "\n")
    cols = ("fro", "effective_rank", "stable_rank", "changed_frac", "top1pct_mass", "overlap_left", "overlap_right",
            "random_overlap")
    lines = ["| run | step | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for rep in reports:
        s = rep["summary"]
        lines.append(f"| {label_of(rep)} | {rep['step']} | " + " | ".join(f"{s.get(c, float('nan')):.4g}" for c in cols)
                     + " |")
    lines += ["", "Subspace locking (mean top-k overlap with the final update's subspace, per checkpoint):", ""]
    for rep in reports:
        lk = ", ".join(f"{r['step']}: {r['overlap_final']:.2f}" for r in rep["locking"]
                       if r["overlap_final"] == r["overlap_final"])
        lines.append(f"- {label_of(rep)}: {lk or 'n/a'}")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
