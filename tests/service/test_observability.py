"""/metrics parses and moves with traffic; request ids propagate; JSON logs hide secrets."""

from __future__ import annotations

import json
import logging

from prometheus_client.parser import text_string_to_metric_families


def _samples(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_parse_and_count_requests(client) -> None:
    key = ("code2lora_http_requests_total", (("method", "GET"), ("route", "/repos/{ref}"), ("status", "404")))
    before = _samples(client).get(key, 0.0)
    for _ in range(3):
        assert client.get("/repos/nope").status_code == 404
    after = _samples(client)
    assert after[key] == before + 3
    assert ("code2lora_job_queue_depth", ()) in after


def test_request_id_roundtrip(client) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc123"}).headers["x-request-id"] == "abc123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_json_formatter_masks_secrets() -> None:
    from service.observability import JsonFormatter

    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.c2l_webhook_secret = "s3cret"
    record.c2l_repo = "alpha"
    out = json.loads(JsonFormatter().format(record))
    assert out["msg"] == "hello world" and out["repo"] == "alpha" and out["webhook_secret"] == "***"
