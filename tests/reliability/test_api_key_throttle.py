"""API-key guessing is throttled per client address (issue 21, Low 11, first half).

The review sent 200 wrong keys in 2 s and got 200 answers of 401, never a 429. Now, past
CODE2LORA_API_KEY_MAX_FAILURES wrong keys in CODE2LORA_API_KEY_FAILURE_WINDOW_S from one address, every key from
that address (the right one too, so an answer tells a guesser nothing) gets 429 with Retry-After until the window
frees up; other addresses are not affected.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.timeout(300)

KEY = "right-key-0123456789"
ATTACKER = ("203.0.113.7", 40000)
OTHER = ("198.51.100.9", 40000)


@pytest.fixture
def app_with_keys(modelless_settings):
    from service.api.app import create_app

    def _make(**overrides: object):
        return create_app(modelless_settings(host="0.0.0.0", api_keys=["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()],
                                        **overrides))

    return _make


def _client(app, peer: tuple[str, int]) -> TestClient:
    return TestClient(app, client=peer, raise_server_exceptions=False)


def test_200_wrong_keys_in_2_s_get_429_with_retry_after(app_with_keys) -> None:
    app = app_with_keys(api_key_max_failures=20, api_key_failure_window_s=60)
    with _client(app, ATTACKER) as attacker, _client(app, OTHER) as other:
        statuses: list[int] = []
        retry_after: set[str] = set()
        t0 = time.monotonic()
        for i in range(200):
            r = attacker.get("/v1/models", headers={"Authorization": f"Bearer guess-{i:04d}"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after.add(r.headers.get("retry-after", ""))
        took = time.monotonic() - t0
        print(f"200 wrong keys in {took:.2f} s: {statuses.count(401)} x 401, {statuses.count(429)} x 429")
        assert statuses[:20] == [401] * 20  # the first guesses are told they are wrong
        assert statuses[20:] == [429] * 180  # then refused, whatever the key
        assert retry_after and all(v.isdigit() and 1 <= int(v) <= 60 for v in retry_after), retry_after
        # The right key from the throttled address is refused the same way: a guess that hits learns nothing.
        right = attacker.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
        for path in ("/repos", "/jobs/x"):  # the same throttle guards every keyed route
            assert attacker.get(path, headers={"Authorization": "Bearer guess"}).status_code == 429
        # Another address is not affected.
        assert other.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert other.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_throttle_frees_up_after_the_window_and_missing_keys_are_not_counted(app_with_keys) -> None:
    app = app_with_keys(api_key_max_failures=3, api_key_failure_window_s=1.0)
    with _client(app, ATTACKER) as c:
        for _ in range(10):  # no key at all: a misconfigured client, not a guess
            assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert [c.get("/v1/models", headers={"Authorization": f"Bearer g{i}"}).status_code
                for i in range(4)] == [401, 401, 401, 429]
        wait = int(c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).headers["retry-after"])
        assert wait == 1
        time.sleep(1.1)
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
