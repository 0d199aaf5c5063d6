"""Names of adapter versions: the public `repo@vN` and the engine-side `repo@vN+<digest>` (the only place they are
written; `service.store` re-exports them)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol


class _Named(Protocol):
    name: str


class _Version(Protocol):
    version: int
    artifact_sha256: str


ENGINE_DIGEST_CHARS = 16  # 64 bits of the artifact's sha256 in an engine-side name
_DIGEST_SUFFIX = re.compile(rf"\+[0-9a-f]{{{ENGINE_DIGEST_CHARS}}}$")


def adapter_name(repo: _Named, version: int) -> str:
    """The public name of one adapter version: `<repository name>@v<N>` (what `/v1/models` lists and responses
    report)."""
    return f"{repo.name}@v{version}"


def engine_name(repo: _Named, version: int, artifact_sha256: str) -> str:
    """The name an engine loads one adapter version under: `<repository name>@v<N>+<sha256 prefix>`.

    A public name can come back with other bytes (a repository deleted and registered again under its name, a fresh
    data dir against a running vLLM); the digest makes the engine-side name unique to the artifact, so an engine
    that still holds an old adapter under an old name can never serve it for the new one.
    """
    if len(artifact_sha256) < ENGINE_DIGEST_CHARS:
        raise ValueError(f"artifact digest too short: {artifact_sha256!r}")
    return f"{adapter_name(repo, version)}+{artifact_sha256[:ENGINE_DIGEST_CHARS]}"


def engine_names(repo: _Named, versions: Iterable[_Version]) -> list[str]:
    """Engine-side names of `versions` (rows with `version` and `artifact_sha256`)."""
    return [engine_name(repo, v.version, v.artifact_sha256) for v in versions]


def public_name(name: str) -> str:
    """The public `repo@vN` of an engine-side name (a name without a digest suffix comes back unchanged)."""
    return _DIGEST_SUFFIX.sub("", name)
