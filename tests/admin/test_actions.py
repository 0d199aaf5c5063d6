"""Each dashboard action calls through to the service functions and changes state (TestClient)."""

from __future__ import annotations

from pathlib import Path

from service.api.admin.plot import line_plot_svg
from tests.admin.helpers import SECURE, jobs_of, login, post, repo_row, seed_repo
from tests.conftest import wait_job


def _admin(client_for):
    client = client_for(**SECURE)
    assert login(client, "admin", "admin-pw").status_code == 303
    return client


def _flash(client, path: str) -> str:
    return client.get(path).text


def test_pin_unpin_rollback_and_delete_version(client_for) -> None:
    client = _admin(client_for)
    rid = seed_repo(client, 4)
    page = f"/admin/repos/{rid}"

    assert post(client, f"{page}/versions/2/pin").headers["location"] == page
    repo = repo_row(client, rid)
    assert (repo.pinned_version, repo.active_version) == (2, 2)
    assert "version 2 pinned" in _flash(client, page)

    post(client, f"{page}/rollback")  # refused while pinned: shown, nothing changes
    assert "pinned; unpin" in _flash(client, page) and repo_row(client, rid).active_version == 2

    post(client, f"{page}/unpin")
    repo = repo_row(client, rid)
    assert (repo.pinned_version, repo.active_version) == (None, 4)

    post(client, f"{page}/rollback")
    assert repo_row(client, rid).active_version == 3
    post(client, f"{page}/rollback", version="1")
    assert repo_row(client, rid).active_version == 1
    assert "version 1 is active" in _flash(client, page)

    post(client, f"{page}/versions/4/delete")
    assert [v.version for v in repo_row(client, rid).versions] == [1, 2, 3]
    post(client, f"{page}/versions/1/delete")  # the active one is protected
    assert "cannot be deleted" in _flash(client, page)
    assert [v.version for v in repo_row(client, rid).versions] == [1, 2, 3]


def test_regenerate_and_retry_queue_jobs(client_for) -> None:
    client = _admin(client_for)
    rid = seed_repo(client, 1)  # its URL does not exist, so the regenerate job fails
    post(client, f"/admin/repos/{rid}/regenerate")
    [job] = jobs_of(client, rid)
    assert (job.kind, job.params) == ("regenerate", {"full": True})
    failed = wait_job(client, job.id)
    assert failed["status"] == "failed" and failed["error"]

    jobs_page = client.get("/admin/jobs").text
    assert failed["error"].split(":")[0] in jobs_page and f"/admin/jobs/{job.id}/retry" in jobs_page
    assert post(client, f"/admin/jobs/{job.id}/retry", next=f"/admin/repos/{rid}").headers["location"] == \
        f"/admin/repos/{rid}"
    jobs = jobs_of(client, rid)
    assert len(jobs) == 2 and (jobs[1].kind, jobs[1].params) == ("regenerate", {"full": True})
    wait_job(client, jobs[1].id)

    post(client, f"/admin/jobs/{jobs[1].id}/retry")
    post(client, f"/admin/jobs/{job.id}/retry")  # retrying twice is allowed: it is a new job each time
    assert len(jobs_of(client, rid)) == 4


def test_retry_refuses_a_job_that_did_not_fail(client_for) -> None:
    client = _admin(client_for)
    rid = seed_repo(client, 1)
    from service.db.models import Job

    with client.app.state.c2l.sessions() as s:
        s.add(Job(id="done1", kind="ingest", repository_id=rid, status="succeeded"))
        s.commit()
    post(client, "/admin/jobs/done1/retry")
    assert "only failed jobs can be retried" in _flash(client, "/admin/jobs")
    assert len(jobs_of(client, rid)) == 1
    assert post(client, "/admin/jobs/nope/retry").status_code == 404


def test_rotate_secret_shows_the_new_one_once(client_for) -> None:
    client = _admin(client_for)
    rid = seed_repo(client, 1)
    resp = post(client, f"/admin/repos/{rid}/webhook-secret")
    secret = repo_row(client, rid).webhook_secret
    assert resp.status_code == 200 and secret != "old-secret" and secret in resp.text
    assert secret not in client.get(f"/admin/repos/{rid}").text
    assert secret not in str(client.cookies.get("c2l_admin"))


def test_register_local_repo_and_delete_it(client_for, sample_repo: Path) -> None:
    client = _admin(client_for)
    resp = post(client, "/admin/repos", url=str(sample_repo), name="sample", mode="evolving")
    assert resp.status_code == 200 and "Webhook secret (shown once" in resp.text
    repo = client.get("/repos/sample").json()
    assert repo["mode"] == "evolving"
    assert wait_job(client, repo["latest_job"]["id"])["status"] == "succeeded"
    page = client.get(f"/admin/repos/{repo['id']}").text
    assert 'data-version="1"' in page and "/webhooks/github" in page

    post(client, "/admin/repos", url=str(sample_repo))  # same URL again: a conflict, shown on the list
    assert "already registered" in _flash(client, "/admin")
    post(client, "/admin/repos", url="ftp://example.com/x.git")
    assert "transport &#39;ftp&#39; is not allowed" in _flash(client, "/admin")

    assert post(client, f"/admin/repos/{repo['id']}/delete").headers["location"] == "/admin"
    assert client.get("/repos/sample").status_code == 404


def test_versions_table_plot_and_promotion_note(client_for) -> None:
    client = _admin(client_for)
    metrics = [{"eval_loss": 2.5}, {"eval": {"loss": 2.1, "exact_match": 0.4}},
               {"eval_loss": 2.9, "promotion": {"promoted": False, "reason": "eval loss rose by 0.8"}}]
    rid = seed_repo(client, 3, metrics)
    page = client.get(f"/admin/repos/{rid}").text
    assert "<polyline" in page and page.count("<circle") == 3
    assert "eval loss rose by 0.8" in page and "eval_exact_match 0.4" in page
    bare = seed_repo(client, 1, name="bare")
    assert "no eval metrics yet" in client.get(f"/admin/repos/{bare}").text


def test_plot_scales_points_into_the_box() -> None:
    svg = str(line_plot_svg([(1, 3.0), (2, 1.0)]))
    assert 'points="52.0,12.0 348.0,114.0"' in svg  # highest loss at the top, lowest at the bottom
    assert str(line_plot_svg([])) == "" and "<circle" in str(line_plot_svg([(1, 2.0)]))


class _FakeEngine:
    def stats(self):
        from service.engines.base import EngineStats

        # Engine-side names carry the artifact digest; the page keys its rows by the public name.
        alpha, beta, gamma = "alpha@v1+0123456789abcdef", "beta@v2+fedcba9876543210", "gamma@v1+00112233aabbccdd"
        return EngineStats(engine="local", loaded=[alpha, beta], slots=8,
                           requests_per_adapter={alpha: 5, gamma: 2}, latency_ms={"p50": 12.5, "p99": 80.0})


def test_engine_page_shows_stats_or_no_engine(client_for) -> None:
    client = _admin(client_for)
    assert "no engine" in client.get("/admin/engine").text
    client.app.state.c2l.serving_engine = _FakeEngine()
    try:
        page = client.get("/admin/engine").text
    finally:
        client.app.state.c2l.serving_engine = None
    assert "2 / 8 used" in page and "p50 12.5" in page and "gamma@v1" in page
    assert 'data-adapter="alpha@v1"' in page and 'data-adapter="beta@v2"' in page and "slot 2" in page
    assert "alpha@v1+0123456789abcdef" in page  # the engine-side name is shown too
