"""From a checkout to a stored adapter version: extract, reuse or generate, store, activate."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import func, select

from service.db.models import AdapterVersion, ContextSnapshot, Repository
from service.jobs.runner import JobError

if TYPE_CHECKING:
    from service.settings import Settings
    from service.state import ServiceState

log = logging.getLogger(__name__)


# The trained checkpoint shipped for the bundled base model (training/checkpoints/, see docs/EVAL.md).
# A data file, not an import: the service layer does not depend on the training code.
# Hypernetwork v2 since 2026-11-30: it beat v1 on the validation repositories (docs/EVAL.md).
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "training" / "checkpoints" / "smollm2-135m-v2-top4" \
    / "hypernet.safetensors"


def default_checkpoint(settings: "Settings") -> Path | None:
    """The configured checkpoint; else the shipped one when serving the bundled model; else None (untrained)."""
    if settings.hypernet_checkpoint is not None:
        return Path(settings.hypernet_checkpoint)
    if settings.base_model_path is None and SHIPPED_CHECKPOINT.exists():
        return SHIPPED_CHECKPOINT
    return None


def load_generator(settings: "Settings") -> Any:
    """The hypernetwork generator for the configured checkpoint and base model (bundled defaults)."""
    from hypernet.basemodel import prepare_bundled

    base = settings.base_model_path or prepare_bundled(settings.model_cache)
    checkpoint = default_checkpoint(settings)
    return _generator(str(checkpoint) if checkpoint else None, str(base))


@lru_cache(maxsize=2)
def _generator(checkpoint: str | None, base: str) -> Any:
    # One per process and configuration: it is read-only after loading, so jobs can share it.
    from hypernet.generator import AdapterGenerator

    return AdapterGenerator.load(checkpoint=checkpoint, base_model_path=base)


def pack_adapter(folder: Path) -> bytes:
    """An adapter folder as one uncompressed tar blob (what the cache stores)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(Path(folder).iterdir()):
            tar.add(f, arcname=f.name)
    return buf.getvalue()


def unpack_adapter(data: bytes, dest: Path) -> Path:
    """Restore a cached adapter into `dest` (temp + rename; refuses member paths that escape)."""
    tmp = dest.parent / f".tmp-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(tmp, filter="data")
    if dest.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return dest
    tmp.rename(dest)
    return dest


def adapter_path(state: "ServiceState", version: AdapterVersion) -> Path:
    """The artifact folder of a version, restored from the cache if the folder is gone."""
    path = Path(version.artifact_path)
    if (path / "adapter_config.json").exists():
        return path
    data = state.cache.get(version.artifact_sha256)
    if data is None:
        raise FileNotFoundError(f"adapter artifact {version.artifact_sha256[:12]} is missing")
    return unpack_adapter(data, path)


def build_adapter_version(
    state: "ServiceState", repo_id: int, ctx: Any, commit_sha: str, report: Callable[[float, str], None],
    evolve: Callable[[Any], Any] | None = None, heldout: Any = None,
) -> AdapterVersion:
    """Record the context snapshot, generate (or reuse) the adapter, measure it and record a new version.

    `ctx` is what the hypernetwork may see (the repository without its held-out files); `heldout`
    (`service.evaluation.HeldOut`) is the slice the version is scored on. `evolve(generator) -> EvolvingState`
    switches to evolving mode: the adapter is generated from the repository's recurrent state instead of the
    static context, and keyed by the state's digest. The new version becomes active only through the
    promotion gate (`record_version`).
    """
    settings = state.settings
    summary = ctx.summary() if hasattr(ctx, "summary") else {"stats": dict(ctx.stats)}
    with state.sessions.begin() as s:
        if s.get(Repository, repo_id) is None:
            raise JobError("repository was deleted while the job ran")
        s.add(ContextSnapshot(repository_id=repo_id, commit_sha=commit_sha, context_digest=ctx.digest,
                              stats=json.loads(json.dumps(summary, default=str))))
        repo = s.get(Repository, repo_id)
        repo.status = "generating"

    report(0.5, "loading the hypernetwork")
    generator = state.generator()
    hypernet_version = generator.version_id
    evolving = evolve(generator) if evolve is not None else None
    digest = evolving.digest if evolving is not None else ctx.digest
    kind = "evolving" if evolving is not None else "generated"

    # Same context + same hypernetwork = same adapter: reuse any stored artifact, no recompute.
    with state.sessions() as s:
        existing = s.scalar(select(AdapterVersion).where(
            AdapterVersion.context_digest == digest, AdapterVersion.hypernet_version == hypernet_version,
            AdapterVersion.kind != "refined", AdapterVersion.status == "ready")
            .order_by(AdapterVersion.id.desc()).limit(1))
    metrics: dict[str, Any] = {}
    if existing is not None and (Path(existing.artifact_path) / "adapter_config.json").exists():
        sha, path = existing.artifact_sha256, Path(existing.artifact_path)
        metrics["reused_from"] = {"repository_id": existing.repository_id, "version": existing.version}
        report(0.6, f"reusing adapter {sha[:12]} (same context and hypernetwork)")
    else:
        report(0.6, "generating the adapter" + (" from the evolving state" if evolving is not None else ""))
        if evolving is not None:
            from hypernet.evolve import generate_from_state

            artifact = generate_from_state(evolving, generator, Path(settings.artifact_dir), ctx)
            metrics["evolving"] = {"steps": evolving.steps, "tokens": len(evolving.weights), "lines": len(evolving.lines)}
        else:
            artifact = generator.generate(ctx, Path(settings.artifact_dir))
        sha, path = artifact.sha256, Path(artifact.path)
        metrics["timings_ms"] = getattr(artifact, "timings_ms", {})
    stats = summary.get("stats", summary)
    metrics["context"] = {k: stats[k] for k in ("files", "definitions") if k in stats}
    if heldout is not None:
        metrics["context"]["heldout_files"] = len(heldout.paths)

    with state.sessions() as s:
        last = s.scalar(select(AdapterVersion).where(AdapterVersion.repository_id == repo_id,
                                                     AdapterVersion.kind != "refined")
                        .order_by(AdapterVersion.version.desc()).limit(1))
        if last is not None and last.context_digest == digest and last.hypernet_version == hypernet_version \
                and last.artifact_sha256 == sha:
            # Nothing changed for the model: keep the current version instead of adding a twin.
            with state.sessions.begin() as s2:
                row = s2.get(AdapterVersion, last.id)
                repo = s2.get(Repository, repo_id)
                if row is None or repo is None:
                    raise JobError("repository was deleted while the job ran")
                row.commit_sha = commit_sha
                repo.status, repo.status_message = "ready", None
                s2.flush()
                s2.expunge(row)
                return row
    return record_version(state, repo_id, kind=kind, commit_sha=commit_sha, hypernet_version=hypernet_version,
                          context_digest=digest, sha=sha, path=path, metrics=metrics, heldout=heldout,
                          report=report)


def record_version(
    state: "ServiceState", repo_id: int, *, kind: str, commit_sha: str, hypernet_version: str, context_digest: str,
    sha: str, path: Path, metrics: dict[str, Any], heldout: Any, report: Callable[[float, str], None],
) -> AdapterVersion:
    """Score a stored adapter against the base model and the active version, then add it as a new version;
    it becomes active when the promotion gate passes (and no version is pinned). The gate's decision and
    the scores go into the version's metrics (`eval`, `promotion`)."""
    from service import evaluation

    settings = state.settings
    with state.sessions() as s:
        repo = s.get(Repository, repo_id)
        if repo is None:
            raise JobError("repository was deleted while the job ran")
        active = next((v for v in repo.versions if v.version == repo.active_version), None)
        active_info = (active.version, active.artifact_path, active.artifact_sha256) if active is not None else None
    if heldout is None or not settings.eval_enabled:
        eval_block: dict[str, Any] = {"skipped": "evaluation disabled" if not settings.eval_enabled
                                      else "no held-out slice"}
    else:
        report(0.7, "scoring the new version on the held-out files")
        try:
            arms: dict[str, Any] = {"base": None, "candidate": evaluation.load_tensors(path)}
            if active_info is not None:
                with state.sessions() as s:
                    active_row = s.scalar(select(AdapterVersion).where(
                        AdapterVersion.repository_id == repo_id, AdapterVersion.version == active_info[0]))
                    active_dir = adapter_path(state, active_row) if active_row is not None else None
                if active_dir is not None:
                    arms["active"] = evaluation.load_tensors(active_dir)
            eval_block = evaluation.score(state, heldout, arms, report=lambda _f, m: report(0.75, m))
            if active_info is not None:
                eval_block["active_version"] = active_info[0]
        except Exception as exc:  # noqa: BLE001 - a scoring failure must not lose the version; it is recorded
            log.warning("scoring repository %s failed: %s", repo_id, exc, exc_info=True)
            eval_block = {"error": f"{type(exc).__name__}: {exc}"}
    decision = evaluation.gate(eval_block, settings.promote_metric, settings.promote_tolerance,
                               has_active=active_info is not None, kind=kind)
    metrics = {**metrics, "eval": eval_block}

    with state.sessions.begin() as s:
        repo = s.get(Repository, repo_id)
        if repo is None:
            raise JobError("repository was deleted while the job ran")
        number = (s.scalar(select(func.max(AdapterVersion.version)).where(
            AdapterVersion.repository_id == repo_id)) or 0) + 1
        previous = repo.active_version
        promote = decision["promoted"] or previous is None
        if repo.pinned_version is not None and promote:
            decision = {**decision, "promoted": False, "gate_passed": decision["promoted"],
                        "reason": f"v{repo.pinned_version} is pinned (gate: {decision['reason']})"}
            promote = False
        elif not decision["promoted"]:
            decision = {**decision, "gate_passed": False}
        else:
            decision = {**decision, "gate_passed": True}
        version = AdapterVersion(
            repository_id=repo_id, version=number, commit_sha=commit_sha, hypernet_version=hypernet_version,
            context_digest=context_digest, artifact_sha256=sha, artifact_path=str(path), status="ready", kind=kind,
            metrics=json.loads(json.dumps({**metrics, "promotion": decision}, default=str)),
        )
        s.add(version)
        if promote:
            for v in repo.versions:
                v.is_active = False
            version.is_active = True
            repo.active_version = number
        repo.status, repo.status_message = "ready", None
        s.flush()
        s.expunge(version)
        active_now, repo_name = repo.active_version, repo.name
    state.cache.put(sha, pack_adapter(path))
    state.cache.set_active(repo_id, active_now)
    if active_now == number:
        state.swap_adapter((f"{repo_name}@v{number}", str(path)),
                           f"{repo_name}@v{previous}" if previous is not None else None)
        report(0.95, f"version {number} stored and active ({sha[:12]}; {decision['reason']})")
    else:
        report(0.95, f"version {number} stored, not promoted: {decision['reason']}")
    return version
