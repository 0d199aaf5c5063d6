"""Schemathesis against the service's own OpenAPI schema, in process (ASGI transport, `create_app`).

Every route in the schema is fuzzed twice: on an open loopback service (no API keys), and on a service bound
to a public address with API keys, where requests go with a valid key or none at all. Cases come from both of
schemathesis' generation modes (positive: valid by the schema; negative: wrong types, out-of-range values, missing
fields), and half of them are then made hostile by a hypothesis-drawn mutation of one part of the request: a path
or query parameter or a body field set to a huge integer (past 64 bits), a lone surrogate, a NUL or
right-to-left character, a 100 KB string or a deeply nested value; or the whole body replaced by deep nesting (up
to 100,000 levels), bytes that are not UTF-8, `NaN` or a 5,000-digit number. The routes outside the schema (the
dashboard, `/metrics`, the favicon) get the same hostile parameters and form bodies. No response may be a 5xx
(other than a documented 503 with Retry-After) and every documented response must match its schema, content type
and headers. Bounded: a few examples per operation and mode (derandomized), under a minute in all.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.conftest import LOOPBACK_CLIENT, wait_job

API_KEY = "fuzz-key-0123456789"
MAX_EXAMPLES = 6  # per operation, generation mode and auth variant
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
PHASES = (Phase.explicit, Phase.generate)  # no shrinking: a failure is reported as found, in bounded time
CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _app(make_settings, tmp_path: Path, service_checkpoint: Path):
    from service.api.app import create_app

    return create_app(make_settings(engine="local", hypernet_checkpoint=service_checkpoint, clone_timeout_s=5,
                                    allow_local_repos=False, admin_password="fuzz-admin-pw"))


@pytest.fixture
def fuzz_app(make_settings, tmp_path: Path, service_checkpoint: Path, sample_repo: Path):
    """A started app with one ingested repository (so ids and names resolve)."""
    app = _app(make_settings, tmp_path, service_checkpoint)
    client = TestClient(app, raise_server_exceptions=False, client=LOOPBACK_CLIENT)
    client.__enter__()
    try:
        state = app.state.c2l
        state.settings.allow_local_repos = True  # only for this seeding step
        created = client.post("/repos", json={"url": str(sample_repo), "name": "sample"})
        assert created.status_code == 202, created.text
        assert wait_job(client, created.json()["job"]["id"])["status"] == "succeeded"
        state.settings.allow_local_repos = False
        yield app, client
    finally:
        client.__exit__(None, None, None)


def _require_keys(app) -> None:
    """Switch the running service to public-bind mode with one (hashed) API key; read per request."""
    settings = app.state.c2l.settings
    settings.host = "0.0.0.0"
    settings.api_keys = ["sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest()]


def _schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_schema_covers_every_public_route(make_settings, tmp_path: Path, service_checkpoint: Path) -> None:
    paths = set(_app(make_settings, tmp_path, service_checkpoint).openapi()["paths"])
    for expected in ("/repos", "/repos/{ref}", "/jobs/{job_id}", "/v1/completions", "/v1/chat/completions",
                     "/v1/models", "/webhooks/github", "/webhooks/gitlab", "/healthz"):
        assert expected in paths, sorted(paths)


# ----------------------------------------------------------------------------------------- hostile values

HUGE_INTS = st.one_of(st.integers(min_value=2**63, max_value=2**256), st.integers(min_value=-(2**256), max_value=-(2**63)),
                      st.sampled_from([2**64, 10**40, -1, 0]))
ODD_TEXT = st.one_of(
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),  # lone surrogates
    st.sampled_from(["\x00", "a\x00b", "\u202e\ufeff", "..", "../../etc/passwd", "%ff%fe", "x@v" + "9" * 40,
                     "😀" * 50, " ", ""]),
    st.integers(min_value=1_000, max_value=100_000).map(lambda n: "a" * n),
)
DEEP = st.integers(min_value=50, max_value=400).map(lambda n: _nest(n))
HOSTILE_VALUES = st.one_of(HUGE_INTS.map(lambda v: ("huge int", v)), ODD_TEXT.map(lambda v: ("odd text", v)),
                           DEEP.map(lambda v: ("deep value", v)),
                           st.sampled_from([("odd number", 1e308), ("odd number", -0.0), ("odd text", None),
                                            ("odd text", [[]] * 1000)]))
RAW_BODIES = st.one_of(
    st.integers(min_value=1_000, max_value=100_000).map(lambda n: ("deep body", ("[" * n + "]" * n).encode())),
    st.integers(min_value=1_000, max_value=50_000).map(lambda n: ("deep body", ('{"a":' * n + "1" + "}" * n).encode())),
    st.binary(min_size=1, max_size=64).map(lambda b: ("not utf-8", b"\xff\xfe" + b + b"\xc3")),
    st.sampled_from([("odd body", b"NaN"), ("odd body", b"1" + b"0" * 5000), ("odd body", b'{"a": Infinity}'),
                     ("odd body", b'"\\ud800"'), ("odd body", b"")]),
)


def _nest(n: int) -> object:
    value: object = 1
    for i in range(n):
        value = [value] if i % 2 else {"a": value}
    return value


@st.composite
def _cases(draw, operation, mode: GenerationMode):
    """A generated case, and half the time one hostile mutation of it: (case, body override, kind or None)."""
    case = draw(operation.as_strategy(generation_mode=mode))
    where = draw(st.sampled_from(["none", "none", "none", "path", "query", "field", "raw"]))
    params = {p.location: [] for p in operation.iter_parameters()}
    for p in operation.iter_parameters():
        params[p.location].append(p.name)
    if where == "path" and params.get("path"):
        kind, value = draw(st.one_of(HUGE_INTS.map(lambda v: ("huge int", v)), ODD_TEXT.map(lambda v: ("odd text", v))))
        if kind == "odd text" and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            kind, value = "odd text", "%ED%A0%80"  # a surrogate as UTF-8 bytes: what a raw client can send
        case.path_parameters = {**(case.path_parameters or {}), draw(st.sampled_from(params["path"])): str(value)}
        return case, None, f"path: {kind}"
    if where == "query":
        kind, value = draw(HOSTILE_VALUES)
        name = draw(st.sampled_from(params.get("query") or ["unexpected"]))
        if not isinstance(value, (int, float, str)) or (isinstance(value, str) and
                                                         any(0xD800 <= ord(c) <= 0xDFFF for c in value)):
            kind, value = "odd text", "\u202e" * 1000
        case.query = {**(case.query or {}), name: value}
        return case, None, f"query: {kind}"
    if where == "field" and isinstance(case.body, dict):
        kind, value = draw(HOSTILE_VALUES)
        keys = sorted(case.body) or ["unexpected"]
        case.body = {**case.body, draw(st.sampled_from(keys)): value}
        return case, None, f"field: {kind}"
    if where in ("field", "raw") and operation.body:
        kind, raw = draw(RAW_BODIES)
        return case, raw, f"body: {kind}"
    return case, None, None


def _send(client: TestClient, case, raw: bytes | None, headers: dict[str, str]):
    # through our TestClient: the app's engine lives on its event loop (schemathesis's own ASGI transport would
    # run the app on a second loop)
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    url = kwargs.get("url")
    if isinstance(url, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        # httpx refuses control characters in a URL; a raw client sends them percent-encoded, so do that
        kwargs["url"] = "".join(f"%{ord(c):02X}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in url)
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), (bytes, str)):
        kwargs["content"] = kwargs.pop("data")
    if raw is not None:
        for key in ("json", "data", "content", "files"):
            kwargs.pop(key, None)
        kwargs["content"] = raw
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "content-type": "application/json"}
    elif "json" in kwargs:
        # json.dumps with ensure_ascii escapes a lone surrogate ("\\ud800"): valid JSON, invalid Unicode
        import json

        kwargs["content"] = json.dumps(kwargs.pop("json"), ensure_ascii=True, allow_nan=True).encode()
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "content-type": "application/json"}
    return client.request(**kwargs), kwargs


def _fuzz_operation(operation, mode: GenerationMode, client: TestClient, variants: list[dict[str, str]],
                    statuses: Counter, kinds: Counter, failures: list[str]) -> None:
    from hypothesis import given

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True, phases=PHASES,
              suppress_health_check=list(HealthCheck))
    @given(drawn=_cases(operation, mode))
    def run(drawn) -> None:
        case, raw, kind = drawn
        kinds[kind or f"{mode.value} case"] += 1
        for headers in variants:
            response, kwargs = _send(client, case, raw, headers)
            statuses[response.status_code] += 1
            if response.status_code == 503:  # documented overload/unavailable answer
                assert "retry-after" in {k.lower() for k in response.headers}, case.as_curl_command()
                continue
            try:
                if response.status_code >= 500:
                    raise AssertionError(f"{response.status_code} {response.text[:300]}")
                case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=kwargs)
            except Exception as exc:  # noqa: BLE001 - collect and report all operations at once
                failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}, {kind}] "
                                f"{headers}: {exc}"[:2000])
                raise

    before = len(failures)
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - recorded in failures
        if len(failures) == before:  # not a response check: generation itself failed
            if mode is GenerationMode.NEGATIVE:  # e.g. an operation without parameters has nothing to negate
                kinds[f"negative mode not applicable ({type(exc).__name__})"] += 1
                return
            failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}]: "
                            f"{type(exc).__name__}: {exc}"[:2000])


def _fuzz(app, client: TestClient, variants: list[dict[str, str]], statuses: Counter,
          kinds: Counter | None = None) -> list[str]:
    failures: list[str] = []
    kinds = kinds if kinds is not None else Counter()
    for result in _schema(app).get_all_operations():
        for mode in MODES:
            _fuzz_operation(result.ok(), mode, client, variants, statuses, kinds, failures)
    return failures


def test_fuzz_all_operations_with_and_without_auth(fuzz_app) -> None:
    app, client = fuzz_app
    open_statuses: Counter = Counter()
    kinds: Counter = Counter()
    failures = _fuzz(app, client, [{}], open_statuses, kinds)  # loopback, no keys: /v1 open
    _require_keys(app)
    auth_statuses: Counter = Counter()
    failures += _fuzz(app, client, [{"Authorization": f"Bearer {API_KEY}"}, {}], auth_statuses, kinds)
    print(f"fuzz: open {dict(sorted(open_statuses.items()))}, with keys {dict(sorted(auth_statuses.items()))}")
    print(f"fuzz cases: {dict(sorted(kinds.items()))}")
    assert not failures, "\n\n".join(failures)
    assert not [s for s in (open_statuses + auth_statuses) if s >= 500 and s != 503]
    assert sum(open_statuses.values()) > 100 and any(200 <= s < 300 for s in open_statuses)
    assert auth_statuses[401] > 0  # requests without a key were refused, not served
    # the hostile inputs were really sent, in every place
    for kind in ("positive case", "negative case", "path: huge int", "path: odd text", "body: deep body",
                 "body: not utf-8", "field: huge int", "field: odd text", "field: deep value"):
        assert kinds[kind] > 0, (kind, kinds)
    assert sum(v for k, v in kinds.items() if k.startswith("query: ")) > 0, kinds


# --------------------------------------------------------------------------- routes outside the schema

def _hidden_routes(app) -> list[tuple[str, str, list[str]]]:
    """(method, path, path parameter names) of every route the OpenAPI schema leaves out (dashboard, metrics)."""
    out = []
    flat = []
    for route in app.routes:
        included = getattr(route, "effective_candidates", None)  # FastAPI's included routers wrap their routes
        flat += list(included()) if callable(included) else [route]
    for route in flat:
        if getattr(route, "include_in_schema", True) is False and hasattr(route, "param_convertors"):
            for method in sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"}):
                out.append((method, route.path, sorted(route.param_convertors)))
    return out


def test_fuzz_routes_outside_the_schema(fuzz_app) -> None:
    """The dashboard, /metrics and the favicon with hostile path values, query strings and form bodies, logged
    in and not: never a 5xx."""
    app, client = fuzz_app
    routes = _hidden_routes(app)
    assert {p for _, p, _ in routes} >= {"/metrics", "/admin", "/admin/login", "/admin/repos/{repo_id}"}, routes
    statuses: Counter = Counter()
    failures: list[str] = []
    text = st.one_of(ODD_TEXT.filter(lambda v: not any(0xD800 <= ord(c) <= 0xDFFF for c in v)),
                     HUGE_INTS.map(str))
    form = st.dictionaries(st.sampled_from(["url", "name", "branch", "mode", "version", "username", "password",
                                            "csrf_token", "next", "keep"]), text, max_size=4)

    from tests.admin.helpers import csrf, login

    assert login(client, "admin", "fuzz-admin-pw").status_code == 303
    cookies, token = dict(client.cookies), csrf(client, "/admin")
    for method, path, names in routes:
        _fuzz_hidden_route(client, method, path, names, text, form, (cookies, token), statuses, failures)
    client.cookies.clear()
    print(f"fuzz outside the schema: {len(routes)} routes, {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)
    assert sum(statuses.values()) >= len(routes) * 2


def _fuzz_hidden_route(client: TestClient, method: str, path: str, names: list[str], text, form,
                       session: tuple[dict, str], statuses: Counter, failures: list[str]) -> None:
    """Hostile path values, query strings and form bodies; logged in or not, with this session's CSRF token or
    not (with it, the dashboard's actions get past the token check to their own validation)."""
    from hypothesis import given

    cookies, token = session

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True, phases=PHASES,
              suppress_health_check=list(HealthCheck))
    @given(values=st.fixed_dictionaries({n: text for n in names}),
           query=st.dictionaries(st.text(max_size=8), text, max_size=3), body=form, logged_in=st.booleans())
    def run(values, query, body, logged_in) -> None:
        if logged_in:
            body = {**body, "csrf_token": token}
        url = path
        for name, value in values.items():
            url = url.replace("{" + name + "}", value.replace("/", "%2F").replace("?", "%3F").replace("#", "%23")
                              or "x")
        client.cookies.clear()
        if logged_in:
            client.cookies.update(cookies)
        response = client.request(method, url, params=query, data=body if method == "POST" else None,
                                  follow_redirects=False)
        statuses[response.status_code] += 1
        if response.status_code >= 500 and not (response.status_code == 503 and "retry-after" in response.headers):
            failures.append(f"{method} {url} {query} {body}: {response.status_code} {response.text[:300]}")
            raise AssertionError(failures[-1])

    try:
        run()
    except Exception:  # noqa: BLE001 - recorded in failures
        pass
