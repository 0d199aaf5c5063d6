"""Property tests (hypothesis): the context digest (the adapter cache key) and adapter version naming.

The webhook signature property lives in tests/service/test_webhooks.py.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypernet.context.model import FileFacts
from hypernet.context.repo import compute_digest

PATHS = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1,
                max_size=40)
SHAS = st.binary(min_size=1, max_size=16).map(lambda b: hashlib.sha256(b).hexdigest())
FILES = st.dictionaries(PATHS, SHAS, max_size=12)


def _facts(files: dict[str, str]) -> dict[str, FileFacts]:
    return {p: FileFacts(path=p, language="python", sha256=sha, size=1, lines=1) for p, sha in files.items()}


@given(FILES, st.randoms(use_true_random=False))
def test_digest_ignores_order_and_non_content_fields(files: dict[str, str], rnd: random.Random) -> None:
    items = list(files.items())
    rnd.shuffle(items)
    shuffled = _facts(dict(items))
    for f in shuffled.values():  # sizes, line counts and extracted facts are not part of the key
        f.size, f.lines, f.errors = rnd.randint(0, 10**6), rnd.randint(0, 10**4), rnd.randint(0, 3)
    digest = compute_digest(_facts(files))
    assert digest == compute_digest(shuffled)
    assert len(digest) == 64 and int(digest, 16) >= 0


@given(FILES, PATHS, SHAS)
def test_digest_changes_with_any_file_content_or_path(files: dict[str, str], path: str, sha: str) -> None:
    before = compute_digest(_facts(files))
    changed = dict(files)
    changed[path] = sha
    if changed == files:
        assert compute_digest(_facts(changed)) == before
    else:  # a file added, or one file's bytes changed: a different key, so no stale adapter is reused
        assert compute_digest(_facts(changed)) != before
    if files:
        removed = dict(files)
        removed.pop(next(iter(removed)))
        assert compute_digest(_facts(removed)) != before


@given(st.lists(st.tuples(PATHS, SHAS), min_size=2, max_size=2, unique_by=lambda t: t[0]))
def test_digest_is_not_fooled_by_path_and_content_boundaries(pair: list[tuple[str, str]]) -> None:
    # Records are `path NUL sha NEWLINE`. A path may hold newlines (git allows them) but never NUL (no
    # filesystem does), so a path cannot swallow the next record; hypothesis finds the forgery with NUL.
    (p1, s1), (p2, s2) = pair
    two = compute_digest(_facts({p1: s1, p2: s2}))
    assert two != compute_digest(_facts({p1: s1}))
    assert two != compute_digest(_facts({f"{p1}\n{s1}\n{p2}": s2}))
    assert two != compute_digest(_facts({f"{p1}{s1}{p2}": s2}))


def test_digest_depends_on_extractor_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypernet.context.repo as repo_mod

    files = _facts({"a.py": "0" * 64})
    before = compute_digest(files)
    monkeypatch.setattr(repo_mod, "EXTRACTOR_VERSION", "999")
    assert compute_digest(files) != before  # new extraction rules invalidate cached adapters


# ------------------------------------------------------------------------------ adapter naming

NAMES = st.from_regex(r"\A[A-Za-z0-9._-]{1,40}\Z")
VERSIONS = st.integers(min_value=1, max_value=10**6)


@pytest.fixture(scope="module")
def naming_db(tmp_path_factory):
    from service.db.models import Base
    from service.db.session import make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('naming') / 'n.db'}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(NAMES, VERSIONS, VERSIONS)
def test_version_names_round_trip_through_resolution(naming_db, name: str, active: int, other: int) -> None:
    """`<repo>@v<N>` names exactly that version, `<repo>` the active one, and names stay distinct."""
    from types import SimpleNamespace

    from service.db.models import AdapterVersion, Repository
    from service.store import ModelNotFound, adapter_name, engine_name, resolve_model

    state = SimpleNamespace(cache=None)
    with naming_db() as s:
        for table in (AdapterVersion, Repository):
            s.query(table).delete()
        repo = Repository(name=name, url=f"https://example.com/{hashlib.sha1(name.encode()).hexdigest()}.git",
                          branch="", mode="static", status="ready", webhook_secret="x", active_version=active)
        s.add(repo)
        s.flush()
        numbers = sorted({active, other})
        for n in numbers:
            s.add(AdapterVersion(repository_id=repo.id, version=n, commit_sha="c" * 40, hypernet_version="h",
                                 context_digest="d" * 64, artifact_sha256=sha_of(n), artifact_path=f"/nonexistent/{n}",
                                 status="ready", metrics={}))
        s.commit()
        import service.store as store

        original = store.adapter_path
        store.adapter_path = lambda _state, version: version.artifact_path  # no files needed here
        try:
            for n in numbers:
                resolved = resolve_model(state, s, f"{name}@v{n}")
                assert resolved.model_name == adapter_name(repo, n) == f"{name}@v{n}"
                # the engine-side name carries the artifact's digest
                assert resolved.adapter_id == engine_name(repo, n, sha_of(n)) == f"{name}@v{n}+{sha_of(n)[:16]}"
                assert resolved.path == f"/nonexistent/{n}"
            assert resolve_model(state, s, name).adapter_id == engine_name(repo, active, sha_of(active))
            assert resolve_model(state, s, str(repo.id)).model_name == f"{name}@v{active}"
            with pytest.raises(ModelNotFound):
                resolve_model(state, s, f"{name}@v{max(numbers) + 1}")
        finally:
            store.adapter_path = original
        assert len({adapter_name(repo, n) for n in numbers}) == len(numbers)  # immutable, distinct names


def sha_of(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@given(NAMES, VERSIONS, st.binary(min_size=1, max_size=8), st.binary(min_size=1, max_size=8))
def test_engine_names_differ_when_the_bytes_differ(name: str, n: int, a: bytes, b: bytes) -> None:
    """A public name that comes back with other bytes (a repository deleted and registered again) gets another
    engine-side name, so an engine can never serve the old adapter for it."""
    from types import SimpleNamespace

    from service.store import engine_name

    repo = SimpleNamespace(name=name)
    sha_a, sha_b = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    assert (engine_name(repo, n, sha_a) == engine_name(repo, n, sha_b)) == (a == b)


@given(NAMES, NAMES, VERSIONS, VERSIONS)
def test_adapter_names_never_collide_across_repositories(a: str, b: str, n: int, m: int) -> None:
    from types import SimpleNamespace

    from service.store import adapter_name

    if (a, n) != (b, m):
        assert adapter_name(SimpleNamespace(name=a), n) != adapter_name(SimpleNamespace(name=b), m)
