"""State-changing requests are audited in the database with actor and outcome; reads are not."""

from __future__ import annotations

from sqlalchemy import select

from service.db.models import AuditEvent


def _events(client) -> list[AuditEvent]:
    with client.app.state.c2l.sessions() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_mutations_are_audited(client, sample_repo) -> None:
    client.get("/repos")
    client.post("/repos", json={"url": "ext::sh -c id"})
    created = client.post("/repos", json={"url": str(sample_repo)}, headers={"Authorization": "Bearer k1"})
    client.post("/webhooks/github", content=b"{}", headers={"X-GitHub-Event": "ping"})
    events = _events(client)
    assert [(e.method, e.path, e.status) for e in events] == [("POST", "/repos", 422), ("POST", "/repos", 202)]
    assert events[0].actor == "ip:127.0.0.1"
    assert events[1].actor.startswith("key:") and "k1" not in events[1].actor
    assert events[1].request_id == created.headers["x-request-id"]
