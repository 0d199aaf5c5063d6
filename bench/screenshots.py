"""Screenshots of the admin dashboard (docs/img/admin-*.png), taken in headless Chromium on real data.

Runs the service on loopback with a tiny random base model and a perturbed hypernet checkpoint (so that
adapters differ), registers two local repositories, pushes commits and regenerates (the service itself scores
every version on the repository's held-out files and gates its promotion; nothing here writes metrics), pins a
version, sends a few completions, makes one job fail, then photographs the pages.

    .venv/bin/python bench/screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.browser import LiveServer, launch_chromium
from testkit.models import tiny_model
from testkit.repos import SAMPLE_FILES, make_git_repo

TEXTKIT = {
    "textkit/__init__.py": "from .slug import slugify\n",
    "textkit/slug.py": "import re\n\n\ndef slugify(text: str) -> str:\n    \"\"\"URL-safe slug.\"\"\"\n"
                       "    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')\n",
}
PUSHES = [
    {"shapes/volume.py": "def volume_of_box(w: float, h: float, d: float) -> float:\n    return w * h * d\n"},
    {"shapes/triangle.py": "class Triangle:\n    def __init__(self, base: float, height: float) -> None:\n"
                           "        self.base, self.height = base, height\n\n"
                           "    def area(self) -> float:\n        return self.base * self.height / 2\n"},
]


def wait_job(api: httpx.Client, job_id: str) -> dict:
    """Poll the REST API until the job ends."""
    for _ in range(1200):
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job_id)


def commit(path: Path, files: dict[str, str], message: str) -> None:
    """Write `files` into the repository at `path` and commit them."""
    import git

    repo = git.Repo(path)
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    repo.git.add(A=True)
    repo.index.commit(message)


def main() -> None:
    """Build the demo state and write the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    from service.api.app import create_app
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model_dir, ckpt = tiny_model(tmp)
        settings = Settings(_env_file=None, data_dir=tmp / "data", model_cache=tmp / "models",  # type: ignore[call-arg]  # _env_file: pydantic-settings' init-only argument
                            base_model_path=model_dir, hypernet_checkpoint=ckpt, allow_local_repos=True,
                            engine="local", admin_password="demo", session_secret="screenshots" * 4)
        app = create_app(settings)
        sources = {"shapes": tmp / "shapes", "textkit": tmp / "textkit"}
        make_git_repo(sources["shapes"], SAMPLE_FILES)
        make_git_repo(sources["textkit"], TEXTKIT)
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as api:
            ids = {}
            for name, path in sources.items():
                created = api.post("/repos", json={"url": str(path), "name": name,
                                                   "mode": "evolving" if name == "shapes" else "static"}).json()
                ids[name] = created["repository"]["id"]
                wait_job(api, created["job"]["id"])
            for i, files in enumerate(PUSHES):
                commit(sources["shapes"], files, f"push {i + 1}")
                wait_job(api, api.post("/repos/shapes/regenerate").json()["id"])
            api.post("/repos/shapes/versions/2/pin")
            for model in ("shapes", "shapes", "textkit", "base", "shapes@v3"):
                api.post("/v1/completions", json={"model": model, "prompt": "def area", "max_tokens": 8})
            failed = api.post("/repos", json={"url": str(tmp / "missing-repo"), "name": "missing"}).json()
            wait_job(api, failed["job"]["id"])

            with sync_playwright() as pw:
                browser = launch_chromium(pw)
                page = browser.new_page(viewport={"width": 1360, "height": 860})
                page.goto(f"{server.url}/admin/login")
                page.screenshot(path=str(args.out / "admin-login.png"))
                page.fill("input[name=username]", "admin")
                page.fill("input[name=password]", "demo")
                page.click("button[type=submit]")
                page.wait_for_url(f"{server.url}/admin")
                shots = {"admin-repos.png": "/admin", "admin-repo.png": f"/admin/repos/{ids['shapes']}",
                         "admin-jobs.png": "/admin/jobs", "admin-engine.png": "/admin/engine"}
                for filename, path in shots.items():
                    page.goto(f"{server.url}{path}")
                    page.screenshot(path=str(args.out / filename), full_page=True)
                    print(f"wrote {args.out / filename}")
                browser.close()


if __name__ == "__main__":
    main()
