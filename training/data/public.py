"""Public GitHub repositories as corpus material: a committed manifest and the code that materialises it.

Only the manifest (repository, commit, split) is committed, never the repositories' code. At corpus-build time
the repositories are fetched as bare git snapshots (the session's ``fetch`` tool writes them to
``/work/.mirror/<owner>+<name>/repo`` or ``.../repo/.git``), then ``materialize`` exports each one at its
manifest commit into ``data/public/<owner>+<name>/`` (git-ignored), where the corpus source ``"public"`` finds it.

    python -m training.data.public manifest --from-mirror      # write public_manifest.json from the mirrors
    python -m training.data.public materialize                 # export them into data/public
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Any

from training.data.sources import stable_hash

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("public_manifest.json")
MANIFEST_FORMAT = 1
DEFAULT_MIRROR_ROOT = Path("/work/.mirror")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / "data" / "public"  # under /data/, which .gitignore already keeps out of git
STAMP = ".commit"
SPLITS = ("train", "val", "test")

# Giant monorepos and notebook/data collections: too large or too unlike a library to be one "repository" of the
# corpus. Listed by name so that a later --from-mirror never picks them up even when a snapshot exists.
EXCLUDED_REPOS = frozenset({
    "django/django", "python/cpython", "tensorflow/tensorflow", "pytorch/pytorch", "huggingface/transformers",
    "pandas-dev/pandas", "numpy/numpy", "scipy/scipy", "scikit-learn/scikit-learn", "sympy/sympy",
    "matplotlib/matplotlib", "ansible/ansible", "home-assistant/core", "apache/airflow", "python/mypy",
    "python/typeshed", "TheAlgorithms/Python",
})
# Top-level names that are not a package's import name: collisions on them say nothing about duplication.
_NOT_PACKAGE_NAMES = frozenset({
    "test", "tests", "testing", "doc", "docs", "example", "examples", "script", "scripts", "tools", "tool", "bench",
    "benchmark", "benchmarks", "setup", "conftest", "noxfile", "tasks", "fabfile", "build", "dist", "src", "lib",
    "utils", "util", "demo", "demos", "samples", "sample", "contrib", "extras", "ci", "release", "version",
})


def mirror_dir(mirror_root: Path | None = None) -> Path:
    """The mirror root: the argument, else env ``CODE2LORA_MIRROR_DIR``, else ``/work/.mirror``."""
    if mirror_root is not None:
        return Path(mirror_root)
    return Path(os.environ.get("CODE2LORA_MIRROR_DIR") or DEFAULT_MIRROR_ROOT)


def folder_name(repo: str) -> str:
    """``owner/name`` -> ``owner+name`` (GitHub names never hold a '+', so this is reversible)."""
    return repo.replace("/", "+", 1)


def find_mirror(repo: str, mirror_root: Path | None = None) -> Path | None:
    """The git dir of a fetched snapshot of ``owner/name``, or None; both snapshot layouts are handled.

    ``mirror_root`` defaults to env ``CODE2LORA_MIRROR_DIR``, else ``/work/.mirror``.
    """
    base = mirror_dir(mirror_root) / folder_name(repo) / "repo"
    # A bare snapshot is the git dir itself; a non-bare one keeps it in .git.
    for cand in (base, base / ".git"):
        if (cand / "HEAD").is_file() and (cand / "objects").is_dir():
            return cand
    return None


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True,
                          text=True).stdout


def head_commit(git_dir: Path) -> str:
    """The 40-hex commit HEAD points to."""
    return _git(git_dir, "rev-parse", "--verify", "HEAD^{commit}").strip()


def tracked_files(git_dir: Path, commit: str = "HEAD") -> list[str]:
    """Paths of every file in the commit's tree."""
    return _git(git_dir, "ls-tree", "-r", "--name-only", "-z", commit).split("\0")[:-1]


def assign_splits(repos: list[str], n_test: int, n_val: int, seed: int) -> dict[str, str]:
    """repo -> split, by a seeded stable hash order: test and val counts exact (when there are enough repos).

    A rank order rather than a hash threshold keeps the counts exact; adding k repositories moves at most k
    repositories across each boundary, so existing assignments stay mostly where they were.
    """
    order = sorted(set(repos), key=lambda r: (stable_hash(str(seed), "public-split", r), r))
    return {r: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, r in enumerate(order)}


def build_manifest(repos: list[str], mirror_root: Path | None = None, n_test: int = 40, n_val: int = 20,
                   seed: int = 0) -> dict[str, Any]:
    """A manifest of ``repos`` (``owner/name``) at their mirrors' HEAD commits, split by repository.

    Repositories without a mirror are left out with a warning (their commit cannot be known).
    """
    commits: dict[str, str] = {}
    for repo in sorted(set(repos)):
        git_dir = find_mirror(repo, mirror_root)
        if git_dir is None:
            log.warning("no mirror for %s: left out of the manifest", repo)
            continue
        commits[repo] = head_commit(git_dir)
    splits = assign_splits(list(commits), n_test, n_val, seed)
    return {"format": MANIFEST_FORMAT, "seed": seed,
            "repos": [{"repo": r, "commit": c, "split": splits[r]} for r, c in sorted(commits.items())]}


def load_manifest(path: Path | None = None) -> dict[str, Any]:
    """Read and check a manifest (default: the committed one)."""
    manifest = json.loads(Path(path or MANIFEST).read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"unknown public manifest format {manifest.get('format')!r}")
    for entry in manifest["repos"]:
        if entry["split"] not in SPLITS or len(entry["commit"]) != 40:
            raise ValueError(f"bad manifest entry {entry!r}")
    return manifest


def write_manifest(manifest: dict[str, Any], path: Path | None = None) -> Path:
    """Write a manifest as stable, diff-friendly JSON (one repository a line)."""
    path = Path(path or MANIFEST)
    lines = [json.dumps({"repo": e["repo"], "commit": e["commit"], "split": e["split"]}) for e in manifest["repos"]]
    body = ",\n  ".join(lines)
    path.write_text(f'{{"format": {manifest["format"]}, "seed": {manifest["seed"]}, "repos": [\n  {body}\n]}}\n')
    return path


def _export(git_dir: Path, commit: str, into: Path) -> None:
    """``git archive <commit> | tar -x`` into an existing empty folder."""
    archive = subprocess.Popen(["git", f"--git-dir={git_dir}", "archive", "--format=tar", commit],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, capture_output=True)
    assert archive.stdout is not None
    archive.stdout.close()
    err = archive.stderr.read().decode(errors="replace") if archive.stderr else ""
    if archive.wait() != 0 or untar.returncode != 0:
        raise RuntimeError(f"export of {commit} from {git_dir} failed: {err.strip()} "
                           f"{untar.stderr.decode(errors='replace').strip()}")


def _export_available(git_dir: Path, commit: str, into: Path) -> list[str]:
    """Write the commit's files blob by blob, skipping blobs the snapshot lacks; the paths left out.

    Snapshots omit files of 4 MiB and more (and Git LFS content), and ``git archive`` stops at the first missing
    blob, so this is the fallback. Symlinks and submodules are left out too (the corpus never follows them).
    """
    entries = []
    for rec in _git(git_dir, "ls-tree", "-r", "-z", "--full-tree", commit).split("\0")[:-1]:
        meta, path = rec.split("\t", 1)
        mode, kind, sha = meta.split()
        entries.append((mode, kind, sha, path))
    check = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "--batch-check"], check=True,
                           capture_output=True, text=True,
                           input="".join(f"{sha}\n" for _, kind, sha, _ in entries if kind == "blob"))
    missing_shas = {line.split()[0] for line in check.stdout.splitlines() if line.endswith(" missing")}
    keep, left_out = [], []
    for mode, kind, sha, path in entries:
        parts = Path(path).parts
        if kind != "blob" or mode == "120000" or sha in missing_shas or Path(path).is_absolute() or ".." in parts:
            left_out.append(path)
        else:
            keep.append((mode, sha, path))
    proc = subprocess.Popen(["git", f"--git-dir={git_dir}", "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def feed() -> None:  # a thread, so a full stdout pipe never blocks the writer
        try:
            for _, sha, _ in keep:
                stdin.write(f"{sha}\n".encode())
        finally:
            stdin.close()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    for mode, _, path in keep:
        header = proc.stdout.readline().split()
        size = int(header[2])
        data = proc.stdout.read(size)
        proc.stdout.read(1)  # the newline after each object
        target = into / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if mode == "100755":
            target.chmod(0o755)
    writer.join()
    if proc.wait() != 0:
        raise RuntimeError(f"cat-file failed on {git_dir}")
    return left_out


def is_materialized(folder: Path, commit: str) -> bool:
    """Whether ``folder`` holds a complete export of ``commit`` (its stamp is written last, inside the temp tree)."""
    try:
        return (folder / STAMP).read_text().strip() == commit
    except OSError:
        return False


def materialize(manifest: dict[str, Any], dest: Path | None = None, mirror_root: Path | None = None,
                progress: bool = True) -> list[Path]:
    """Export every manifest repository at its commit into ``dest/<owner>+<name>/``; the folders present after.

    A folder whose ``.commit`` stamp already equals the commit is left alone. A new export goes to a temporary
    folder next to the target and is renamed into place, so a crash never leaves half a tree under the real name.
    Repositories whose mirror is missing are skipped with a warning and counted.
    """
    dest = Path(dest or DEFAULT_DEST)
    dest.mkdir(parents=True, exist_ok=True)
    entries = manifest["repos"]
    try:
        from tqdm import tqdm

        it = tqdm(entries, desc="materialize", disable=not progress)
    except ImportError:  # pragma: no cover
        it = entries
    out: list[Path] = []
    missing: list[str] = []
    for entry in it:
        repo, commit = entry["repo"], entry["commit"]
        folder = dest / folder_name(repo)
        if is_materialized(folder, commit):
            out.append(folder)
            continue
        git_dir = find_mirror(repo, mirror_root)
        if git_dir is None:
            missing.append(repo)
            continue
        # Same file system as the target, so the rename is atomic; the dot keeps it out of corpus discovery.
        for stale in dest.glob(f".{folder.name}.*-*"):  # left by a killed run (SIGKILL skips the cleanup below)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = dest / f".{folder.name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            try:
                _export(git_dir, commit, tmp)
            except RuntimeError as exc:  # usually a blob the snapshot lacks (files >= 4 MiB are not copied)
                shutil.rmtree(tmp)
                tmp.mkdir()
                left_out = _export_available(git_dir, commit, tmp)
                (tmp / ".missing").write_text("".join(f"{p}\n" for p in left_out))
                log.info("%s: git archive failed (%s); exported blob by blob, %d paths left out", repo,
                         str(exc).splitlines()[0][:120], len(left_out))
            (tmp / STAMP).write_text(commit + "\n")
            if folder.exists():  # another commit's export: replace it
                old = dest / f".{folder.name}.old-{os.getpid()}"
                folder.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(folder)
        except BaseException:  # Ctrl-C included: never leave the temporary tree behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        out.append(folder)
    if missing:
        log.warning("%d of %d repositories have no mirror and were skipped: %s", len(missing), len(entries),
                    ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    return out


def installed_names() -> set[str]:
    """Lower-cased import names already in the corpus another way: stdlib modules and this venv's site-packages."""
    names = {n.lower() for n in sys.stdlib_module_names}
    purelib = Path(sysconfig.get_paths()["purelib"])
    if purelib.is_dir():
        for p in purelib.iterdir():
            if p.name.endswith((".dist-info", ".egg-info", ".pth", ".libs")):
                continue
            names.add(p.name.removesuffix(".py").lower())
    return names


def top_level_names(paths: list[str]) -> set[str]:
    """Import names a repository ships: packages at the root or under src/ / lib/, and root modules."""
    out = set()
    for p in paths:
        parts = p.split("/")
        if parts[-1] == "__init__.py" and (len(parts) == 2 or (len(parts) == 3 and parts[0] in ("src", "lib"))):
            out.add(parts[-2])
        elif len(parts) == 1 and p.endswith(".py"):
            out.add(p[:-3])
    return {n.lower() for n in out if n.lower() not in _NOT_PACKAGE_NAMES and not n.startswith("_")}


def excluded_reason(repo: str, paths: list[str], installed: set[str]) -> str | None:
    """Why a mirror should stay out of the manifest, or None."""
    if repo in EXCLUDED_REPOS:
        return "excluded by name"
    if sum(p.endswith(".py") for p in paths) < 2:
        return "fewer than 2 .py files"
    clash = sorted(top_level_names(paths) & installed)
    if clash:  # the same code is already a stdlib / site-packages repository of the corpus
        return f"ships {', '.join(clash)}, already installed or stdlib"
    name = repo.split("/", 1)[1].lower().replace("-", "_")
    if name in installed:
        return f"named like installed {name}"
    return None


def mirrored_repos(mirror_root: Path | None = None) -> list[str]:
    """``owner/name`` of every snapshot under the mirror root."""
    root = mirror_dir(mirror_root)
    if not root.is_dir():
        return []
    return sorted(p.name.replace("+", "/", 1) for p in root.iterdir()
                  if p.is_dir() and "+" in p.name and find_mirror(p.name.replace("+", "/", 1), root))


def eligible_mirrored_repos(mirror_root: Path | None = None) -> list[str]:
    """Mirrored repositories with at least 2 .py files at HEAD that are not excluded (reasons logged)."""
    installed = installed_names()
    keep = []
    for repo in mirrored_repos(mirror_root):
        git_dir = find_mirror(repo, mirror_root)
        assert git_dir is not None
        try:
            paths = tracked_files(git_dir)
        except subprocess.CalledProcessError as exc:
            log.warning("skipping %s: unreadable snapshot (%s)", repo, exc.stderr.strip())
            continue
        reason = excluded_reason(repo, paths, installed)
        if reason:
            log.warning("skipping %s: %s", repo, reason)
            continue
        keep.append(repo)
    return keep


def main(argv: list[str] | None = None) -> int:
    """CLI: ``manifest <owner/name>... | --from-mirror`` and ``materialize [--dest]``."""
    ap = argparse.ArgumentParser(prog="python -m training.data.public", description=__doc__.split("\n")[0])
    ap.add_argument("--mirror-root", type=Path, default=None, help="default: $CODE2LORA_MIRROR_DIR or /work/.mirror")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifest", help="build and write the manifest")
    m.add_argument("repos", nargs="*", help="owner/name ...")
    m.add_argument("--from-mirror", action="store_true", help="every eligible snapshot under the mirror root")
    m.add_argument("--n-test", type=int, default=40)
    m.add_argument("--n-val", type=int, default=20)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", type=Path, default=MANIFEST)
    z = sub.add_parser("materialize", help="export the manifest's repositories")
    z.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    z.add_argument("--manifest", type=Path, default=MANIFEST)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.cmd == "manifest":
        repos = list(args.repos)
        if args.from_mirror:
            repos += eligible_mirrored_repos(args.mirror_root)
        if not repos:
            ap.error("name repositories or pass --from-mirror")
        manifest = build_manifest(repos, args.mirror_root, args.n_test, args.n_val, args.seed)
        path = write_manifest(manifest, args.out)
        counts = {s: sum(e["split"] == s for e in manifest["repos"]) for s in SPLITS}
        print(f"{path}: {len(manifest['repos'])} repositories {counts}")
        return 0
    done = materialize(load_manifest(args.manifest), args.dest, args.mirror_root)
    print(f"{len(done)} repositories under {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
