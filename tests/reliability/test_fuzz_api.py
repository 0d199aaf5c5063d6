"""Schemathesis against the service's own OpenAPI schema, in process (ASGI transport, `create_app`).

Every route in the schema is fuzzed twice: on an open loopback service (no API keys), and on a service bound
to a public address with API keys, where requests go with a valid key or none at all. No response may be a
5xx (other than a documented 503 with Retry-After) and every documented response must match its schema,
content type and headers. Bounded: a few examples per operation, well under two minutes in all.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.conftest import LOOPBACK_CLIENT, wait_job

API_KEY = "fuzz-key-0123456789"
MAX_EXAMPLES = 6
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


def _fuzz(app, client: TestClient, variants: list[dict[str, str]], statuses: Counter) -> list[str]:
    from hypothesis import given

    failures: list[str] = []
    for result in _schema(app).get_all_operations():
        operation = result.ok()

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case) -> None:
            for headers in variants:
                # through our TestClient: the app's engine lives on its event loop (schemathesis's own
                # ASGI transport would run the app on a second loop)
                kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
                if not kwargs.get("cookies"):
                    kwargs.pop("cookies", None)
                if isinstance(kwargs.get("data"), (bytes, str)):
                    kwargs["content"] = kwargs.pop("data")
                response = client.request(**kwargs)
                statuses[response.status_code] += 1
                if response.status_code == 503:  # documented overload/unavailable answer
                    assert "retry-after" in {k.lower() for k in response.headers}, case.as_curl_command()
                    continue
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=kwargs)
                except Exception as exc:  # noqa: BLE001 - collect and report all operations at once
                    # run() is called below, in the same iteration, so the loop variable is the one it means
                    failures.append(f"{operation.method.upper()} {operation.path} {headers}: {exc}"[:2000])  # noqa: B023
                    raise

        try:
            run()
        except Exception:  # noqa: BLE001 - recorded in failures
            pass
    return failures


def test_fuzz_all_operations_with_and_without_auth(fuzz_app) -> None:
    app, client = fuzz_app
    open_statuses: Counter = Counter()
    failures = _fuzz(app, client, [{}], open_statuses)  # loopback, no keys: /v1 open
    _require_keys(app)
    auth_statuses: Counter = Counter()
    failures += _fuzz(app, client, [{"Authorization": f"Bearer {API_KEY}"}, {}], auth_statuses)
    print(f"fuzz: open {dict(sorted(open_statuses.items()))}, with keys {dict(sorted(auth_statuses.items()))}")
    assert not failures, "\n\n".join(failures)
    assert not [s for s in (open_statuses + auth_statuses) if s >= 500 and s != 503]
    assert sum(open_statuses.values()) > 50 and any(200 <= s < 300 for s in open_statuses)
    assert auth_statuses[401] > 0  # requests without a key were refused, not served
