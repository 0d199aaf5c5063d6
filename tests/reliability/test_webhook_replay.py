"""A signed webhook body replayed queues nothing (issue 21, Medium 10), and webhooks do not tell registered URLs
apart from unregistered ones (issue 21, Low 13).

The same signed push body sent again with a new or missing delivery id queued another job each time. Now a push
must carry its delivery id (`X-GitHub-Delivery`; GitLab: `Idempotency-Key` or `X-Gitlab-Event-UUID`), and a
delivery is remembered by its id and by its signed body for CODE2LORA_WEBHOOK_REPLAY_WINDOW_S: a replay answers
"duplicate delivery" and queues nothing. An unknown repository URL and a wrong signature get the same 401.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.db.models import Job, WebhookDelivery
from service.webhooks import github_signature
from tests.conftest import wait_job

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _jobs(client) -> int:
    with client.app.state.c2l.sessions() as s:
        return s.scalar(select(func.count()).select_from(Job))


def _push(url: str, after: str = "b" * 40) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "before": "a" * 40, "after": after,
                       "repository": {"clone_url": url, "default_branch": "main"}}).encode()


def _github(client, body: bytes, secret: str, delivery: str | None):
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": github_signature(secret, body),
               "content-type": "application/json"}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return client.post("/webhooks/github", content=body, headers=headers)


@pytest.fixture
def registered(client, sample_repo: Path):
    created = client.post("/repos", json={"url": str(sample_repo)}).json()
    assert wait_job(client, created["job"]["id"])["status"] == "succeeded"
    return created["repository"]["url"], created["webhook_secret"]


def test_github_replay_with_new_or_missing_delivery_id_queues_nothing(client, registered) -> None:
    url, secret = registered
    body = _push(url)
    before = _jobs(client)
    first = _github(client, body, secret, "delivery-1")
    assert first.status_code == 202 and first.json()["jobs"], first.text
    queued = _jobs(client)
    assert queued == before + 1
    missing = _github(client, body, secret, None)
    assert missing.status_code == 400 and "X-GitHub-Delivery" in missing.json()["detail"]
    for delivery in ("delivery-1", "delivery-2", "brand-new-id"):  # redelivery, then replays with new ids
        again = _github(client, body, secret, delivery)
        assert again.status_code in (200, 202) and again.json()["outcome"].startswith("duplicate delivery"), again.text
    assert _jobs(client) == queued
    # a genuinely new push (another body) is not a duplicate
    other = _github(client, _push(url, after="c" * 40), secret, "delivery-3")
    assert other.status_code == 202 and not other.json()["outcome"].startswith("duplicate")


def test_gitlab_replay_queues_nothing(client, registered) -> None:
    url, secret = registered
    payload = {"object_kind": "push", "ref": "refs/heads/main", "before": "a" * 40, "after": "d" * 40,
               "project": {"git_http_url": url, "default_branch": "main"}}
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret}
    assert client.post("/webhooks/gitlab", json=payload, headers=headers).status_code == 400  # no delivery id
    first = client.post("/webhooks/gitlab", json=payload, headers={**headers, "Idempotency-Key": "k-1"})
    assert first.status_code == 202 and first.json()["jobs"], first.text
    queued = _jobs(client)
    for extra in ({"Idempotency-Key": "k-1"}, {"Idempotency-Key": "k-2"}, {"X-Gitlab-Event-UUID": "u-9"}):
        again = client.post("/webhooks/gitlab", json=payload, headers={**headers, **extra})
        assert again.status_code in (200, 202) and again.json()["outcome"].startswith("duplicate delivery")
    assert _jobs(client) == queued


def test_deliveries_are_forgotten_after_the_window(client_for, sample_repo: Path) -> None:
    import datetime as dt

    client = client_for(webhook_replay_window_s=3600)
    created = client.post("/repos", json={"url": str(sample_repo)}).json()
    wait_job(client, created["job"]["id"])
    url, secret = created["repository"]["url"], created["webhook_secret"]
    body = _push(url)
    assert _github(client, body, secret, "old-1").status_code == 202
    with client.app.state.c2l.sessions() as s:  # two hours pass
        for row in s.scalars(select(WebhookDelivery)):
            row.received_at = row.received_at - dt.timedelta(hours=2)
        s.commit()
    later = _github(client, body, secret, "old-2")
    assert later.status_code == 202 and not later.json()["outcome"].startswith("duplicate")
    with client.app.state.c2l.sessions() as s:  # the old rows were pruned, the new ones kept
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 2


def test_unknown_url_and_bad_signature_get_the_same_answer(client, registered) -> None:
    url, secret = registered
    answers = []
    for target, key in ((url, "wrong-secret"), ("https://git.example.com/not/registered.git", secret),
                        ("https://git.example.com/not/registered.git", "wrong-secret")):
        for event in ("push", "ping"):
            body = _push(target)
            resp = client.post("/webhooks/github", content=body, headers={
                "X-GitHub-Event": event, "X-Hub-Signature-256": github_signature(key, body),
                "X-GitHub-Delivery": "x", "content-type": "application/json"})
            answers.append((resp.status_code, resp.text))
        payload = {"object_kind": "push", "ref": "refs/heads/main", "after": "e" * 40,
                   "project": {"git_http_url": target}}
        resp = client.post("/webhooks/gitlab", json=payload, headers={
            "X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": key, "Idempotency-Key": "y"})
        answers.append((resp.status_code, resp.text))
    assert len(set(answers)) == 1 and answers[0][0] == 401, answers
