"""Bounds on the work of one request (issue 21, High 3).

A 500 KB request with 100,000 prompts used to block every completion for minutes, `max_tokens` 10^9 with `n` 16
was accepted, the in-flight cap counted requests (one request of 16 rows weighed as much as a 1-row one) and a
non-streaming completion went on after its client had gone. Now: prompts per request, `n`, `max_tokens` (the
model's context) and the rows x max_tokens of one request are bounded (400 in OpenAI's shape), the in-flight cap
counts rows and requested tokens (503 + Retry-After when full), and a client disconnect cancels the work.

In process on the tiny random Llama (context 512); end-of-sequence is switched off where a request must run long,
and each decode step is slowed by 5 ms so "long" does not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.timeout(180)

WAIT_S = 60.0


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _slow_no_eos(client, step_s: float = 0.005) -> list[int]:
    """No end-of-sequence and a pause per decode step; returns a live count of decode steps."""
    sched = client.app.state.c2l.serving_engine._sched
    sched.eos_ids = set()
    steps = [0]
    real = sched._decode

    def decode() -> None:
        steps[0] += 1
        time.sleep(step_s)
        real()

    sched._decode = decode
    return steps


def _err(resp, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == status and err["type"] and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def test_per_request_bounds_are_400(client_for) -> None:
    client = client_for(engine="local")
    url = "/v1/completions"
    body = json.dumps({"model": "base", "prompt": ["x"] * 100_000, "max_tokens": 1})
    assert len(body) > 500_000
    started = time.monotonic()
    _err(client.post(url, content=body, headers={"content-type": "application/json"}), 400, "prompt")
    assert time.monotonic() - started < 10
    _err(client.post(url, json={"model": "base", "prompt": [[1]] * 33, "max_tokens": 1}), 400, "prompt")
    ok = client.post(url, json={"model": "base", "prompt": [[1]] * 32, "max_tokens": 1})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 32
    # n beyond 16, max_tokens beyond the context or the per-request token budget
    _err(client.post(url, json={"model": "base", "prompt": "x", "n": 17}), 400, "n")
    _err(client.post(url, json={"model": "base", "prompt": "x", "max_tokens": 10**9, "n": 16}), 400, "max_tokens")
    _err(client.post(url, json={"model": "base", "prompt": "x", "max_tokens": 10**9}), 400, "max_tokens")
    assert "context" in _err(client.post(url, json={"model": "base", "prompt": "x", "max_tokens": 600}), 400)["message"]
    _err(client.post("/v1/chat/completions", json={"model": "base", "max_tokens": 10**9,
                                                   "messages": [{"role": "user", "content": "x"}]}), 400)
    # rows of one request over the whole in-flight cap (64 rows): 400, it could never be served
    _err(client.post(url, json={"model": "base", "prompt": [[1]] * 5, "n": 16, "max_tokens": 1}), 400, "n")
    assert client.app.state.inflight.active == 0 and client.app.state.inflight.tokens == 0


def test_inflight_cap_counts_rows_and_tokens(client_for) -> None:
    client = client_for(engine="local", max_inflight_completions=5, max_inflight_tokens=2100)
    limiter = client.app.state.inflight
    _slow_no_eos(client)
    long_body = {"model": "base", "prompt": "x", "n": 4, "max_tokens": 500}  # 4 rows, 2,000 tokens
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(client.post, "/v1/completions", json=long_body)
        deadline = time.monotonic() + WAIT_S
        while limiter.active != 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (limiter.active, limiter.tokens) == (4, 2000)
        # one more row and 16 tokens fit: served alongside
        small = client.post("/v1/completions", json={"model": "base", "prompt": "y", "max_tokens": 16})
        assert small.status_code == 200, small.text
        assert not long.done()
        # two rows do not fit (rows counted, not requests), nor 200 more tokens
        for body in ({"model": "base", "prompt": "y", "n": 2, "max_tokens": 1},
                     {"model": "base", "prompt": "y", "max_tokens": 200}):
            busy = client.post("/v1/completions", json=body)
            _err(busy, 503)
            assert int(busy.headers["retry-after"]) >= 1
        assert not long.done()
        done = long.result(timeout=WAIT_S)
    assert done.status_code == 200 and len(done.json()["choices"]) == 4
    assert (limiter.active, limiter.tokens) == (0, 0)
    after = client.post("/v1/completions", json={"model": "base", "prompt": "y", "n": 2, "max_tokens": 200})
    assert after.status_code == 200


def test_client_disconnect_cancels_non_streaming_work(client_for) -> None:
    client = client_for(engine="local")
    steps = _slow_no_eos(client)
    engine = client.app.state.c2l.serving_engine
    body = json.dumps({"model": "base", "prompt": ["a", "b"], "n": 4, "max_tokens": 500}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5555), "server": ("testserver", 80), "state": {}}
    sent: list[dict] = []
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        while steps[0] < 10:  # the client goes away once generation is under way
            await asyncio.sleep(0.005)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(client.app(scope, receive, send), WAIT_S))
    returned_after = time.monotonic() - started
    deadline = time.monotonic() + 10
    while engine._sched.counts() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine._sched.counts() == (0, 0)
    assert steps[0] < 250, f"{steps[0]} decode steps ran for a client that left after 10 (of ~500)"
    assert returned_after < 0.005 * 400, returned_after
    assert client.app.state.inflight.active == 0
    # and the engine serves the next client normally
    assert client.post("/v1/completions", json={"model": "base", "prompt": "z", "max_tokens": 3}).status_code == 200
