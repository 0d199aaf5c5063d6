"""Corpus builder: repositories on this machine -> split by repository -> per-repo context and held-out targets."""

from training.data.corpus import (
    CorpusConfig,
    RepoData,
    Sequence,
    build_corpus,
    build_repo,
    discover_repos,
    split_repos,
)

__all__ = ["CorpusConfig", "RepoData", "Sequence", "build_corpus", "build_repo", "discover_repos", "split_repos"]
