"""The dashboard in headless Chromium against a live server: log in, register, regenerate, roll back, pin,
and check that a completion is then answered by the pinned adapter version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.browser import LiveServer, launch_chromium, require_chromium
from testkit.repos import SAMPLE_FILES, make_git_repo

JOB_TIMEOUT_MS = 120_000


@pytest.fixture
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


@pytest.fixture
def live(tmp_path: Path, service_model_dir: Path) -> Iterator[LiveServer]:
    from service.api.app import create_app
    from service.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", model_cache=tmp_path / "models",  # type: ignore[call-arg]  # _env_file: pydantic-settings' init-only argument
                        base_model_path=service_model_dir, allow_local_repos=True, engine="local",
                        admin_password="e2e-admin-pw", session_secret="e2e" * 12)
    with LiveServer(create_app(settings)) as server:
        yield server


def _push_commit(path: Path) -> None:
    import git

    repo = git.Repo(path)
    (path / "shapes" / "volume.py").write_text(
        "def volume_of_box(w: float, h: float, d: float) -> float:\n    return w * h * d\n")
    repo.git.add(A=True)
    repo.index.commit("add volume_of_box")


def test_dashboard_flow_in_chromium(browser: Any, live: LiveServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    src = tmp_path / "shapes-repo"
    make_git_repo(src, SAMPLE_FILES)
    page = browser.new_page()
    page.set_default_timeout(JOB_TIMEOUT_MS)

    # Not logged in: the dashboard sends us to the login form.
    page.goto(f"{live.url}/admin")
    assert "/admin/login" in page.url
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "e2e-admin-pw")
    page.click("button[type=submit]")
    expect(page.get_by_test_id("who")).to_have_text("admin · admin")

    # Register the local repository; its page shows the webhook secret once and follows the job.
    page.fill("form[data-testid=register] input[name=url]", str(src))
    page.fill("form[data-testid=register] input[name=name]", "shapes")
    page.click("form[data-testid=register] button[type=submit]")
    expect(page.get_by_test_id("secret")).to_be_visible()
    expect(page.locator('tr[data-version="1"]')).to_be_visible()
    expect(page.get_by_test_id("active")).to_have_text("v1")
    expect(page.get_by_test_id("jobs").locator("[data-testid=job-status]").first).to_have_text("succeeded")

    # A new commit, then "Regenerate": version 2 appears and becomes active.
    _push_commit(src)
    page.get_by_role("button", name="Regenerate").click()
    expect(page.locator('tr[data-version="2"]')).to_be_visible()
    expect(page.get_by_test_id("active")).to_have_text("v2")

    # Roll back to version 1, then pin version 2.
    page.get_by_role("button", name="Roll back to previous").click()
    expect(page.get_by_test_id("active")).to_have_text("v1")
    page.locator('tr[data-version="2"]').get_by_role("button", name="Pin").click()
    expect(page.get_by_test_id("pinned")).to_have_text("v2")
    expect(page.get_by_test_id("active")).to_have_text("v2")
    expect(page.locator('tr[data-version="2"] .badge.pin')).to_have_text("pinned")

    # The repository list agrees, and a completion naming the repository uses the pinned version.
    page.goto(f"{live.url}/admin")
    expect(page.locator('tr[data-repo="shapes"] .badge.pin')).to_have_text("v2")
    resp = httpx.post(f"{live.url}/v1/completions", json={"model": "shapes", "prompt": "def ", "max_tokens": 4,
                                                           "temperature": 0}, timeout=120)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "shapes@v2"

    # The engine page now lists that adapter with one request.
    page.goto(f"{live.url}/admin/engine")
    expect(page.locator('tr[data-adapter="shapes@v2"]')).to_contain_text("slot")
    page.close()
