"""Request size limits, per-client rate limits, the in-flight cap and CORS (closed by default)."""

from __future__ import annotations

from service.api.limits import InflightLimiter, TokenBuckets


def test_body_over_limit_is_413(client_for) -> None:
    client = client_for(max_request_bytes=1000)
    resp = client.post("/repos", json={"url": "https://example.com/" + "a" * 2000 + ".git"})
    assert resp.status_code == 413
    chunked = client.post("/repos", content=iter([b'{"url": "', b"x" * 1500, b'"}']),
                          headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert client.get("/repos").json() == []


def test_rate_limit_429_with_retry_after(client_for) -> None:
    client = client_for(rate_limit_per_s=0.01, rate_limit_burst=2, api_keys=["k1", "other"], bearer="k1")
    assert [client.get("/v1/models").status_code for _ in range(2)] == [200, 200]
    limited = client.get("/v1/models")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["message"] == "rate limit exceeded"  # OpenAI shape under /v1
    # another configured API key has its own bucket (a made-up token does not: test_proxy_headers.py)
    assert client.get("/v1/models", headers={"Authorization": "Bearer other"}).status_code == 200


def test_token_bucket_refills() -> None:
    buckets = TokenBuckets(rate=1000.0, burst=1)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0.0
    import time

    time.sleep(0.01)
    assert buckets.take("a") == 0.0


def test_inflight_limiter() -> None:
    lim = InflightLimiter(2)
    assert lim.try_enter() and lim.try_enter() and not lim.try_enter()
    lim.leave()
    assert lim.try_enter()


def test_cors_closed_by_default_and_opt_in(client_for) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    closed = client_for()
    assert "access-control-allow-origin" not in closed.options("/v1/completions", headers=preflight).headers
    opened = client_for(cors_origins=["https://app.example"])
    ok = opened.options("/v1/completions", headers={**preflight, "Origin": "https://app.example"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in opened.options("/v1/completions", headers=preflight).headers
