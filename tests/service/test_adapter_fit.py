"""The hypernetwork checkpoint must fit the base model: the service refuses to start otherwise, or, only with
CODE2LORA_ALLOW_ADAPTERS_OFF, serves with adapters switched off and says so in /healthz, /v1/models and the dashboard.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hypernet.checkpoint import shipped_checkpoint
from service.models import ModelMismatch, default_checkpoint, plan_adapters
from service.settings import Settings
from tests.conftest import LOOPBACK_CLIENT, wait_job


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _settings(tmp_path: Path, **fields: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", **fields)  # type: ignore[call-arg]


def test_shipped_checkpoint_that_does_not_fit_is_refused(tmp_path, service_model_dir) -> None:
    settings = _settings(tmp_path, base_model_path=service_model_dir, allow_adapters_off=False)
    with pytest.raises(ModelMismatch) as info:
        plan_adapters(settings)
    message = str(info.value)
    assert "shipped hypernetwork checkpoint" in message and str(service_model_dir) in message
    assert "layers" in message  # the shapes that differ
    assert "CODE2LORA_HYPERNET_CHECKPOINT" in message and "CODE2LORA_ALLOW_ADAPTERS_OFF=true" in message
    assert default_checkpoint(settings) is None


def test_configured_checkpoint_that_does_not_fit_is_refused(tmp_path, service_checkpoint) -> None:
    from hypernet.basemodel import prepare_bundled

    settings = _settings(tmp_path, base_model_path=prepare_bundled(), hypernet_checkpoint=service_checkpoint,
                         allow_adapters_off=False)
    with pytest.raises(ModelMismatch, match="CODE2LORA_HYPERNET_CHECKPOINT"):
        plan_adapters(settings)


def test_adapters_off_only_when_allowed(tmp_path, service_model_dir) -> None:
    plan = plan_adapters(_settings(tmp_path, base_model_path=service_model_dir, allow_adapters_off=True))
    assert plan.checkpoint is None and plan.off and "does not fit" in plan.off


def test_a_checkpoint_that_fits_is_used(tmp_path, service_model_dir, service_checkpoint) -> None:
    plan = plan_adapters(_settings(tmp_path, base_model_path=service_model_dir, hypernet_checkpoint=service_checkpoint,
                                   allow_adapters_off=False))
    assert plan.checkpoint == service_checkpoint and plan.off is None


def test_bundled_model_by_path_keeps_the_shipped_checkpoint(tmp_path) -> None:
    """deploy/local-stack sets CODE2LORA_BASE_MODEL_PATH to the prepared bundled model: the shipped checkpoint fits
    it and is used (it used to be skipped, leaving every adapter a no-op)."""
    from hypernet.basemodel import prepare_bundled

    plan = plan_adapters(_settings(tmp_path, base_model_path=prepare_bundled(), allow_adapters_off=False))
    assert plan.checkpoint == shipped_checkpoint() and plan.off is None


def test_service_refuses_to_start(make_settings) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    with pytest.raises(ModelMismatch, match="does not fit the base model"):
        with TestClient(create_app(make_settings(allow_adapters_off=False)), client=LOOPBACK_CLIENT):
            pass


def test_adapters_off_is_reported_everywhere(client_for, sample_repo) -> None:
    client = client_for(allow_adapters_off=True, eval_enabled=False)
    health = client.get("/healthz").json()
    assert health["status"] == "degraded"
    assert health["adapters"]["on"] is False and "does not fit" in health["adapters"]["reason"]

    created = client.post("/repos", json={"url": str(sample_repo), "name": "sample"})
    assert wait_job(client, created.json()["job"]["id"], timeout=600)["status"] == "succeeded"
    models = client.get("/v1/models").json()
    assert "does not fit" in models["adapters_off"]
    cards = {c["id"]: c for c in models["data"]}
    assert cards["sample"]["adapters"] == "off" and cards["sample@v1"]["adapters"] == "off"
    assert "adapters" not in cards["base"]
    assert client.get("/v1/models/sample").json()["id"] == "sample"

    page = client.get("/admin")
    assert page.status_code == 200
    assert 'data-testid="adapters-off"' in page.text and "Adapters are switched off" in page.text


def test_adapters_on_is_reported(client_for, service_checkpoint) -> None:
    client = client_for(hypernet_checkpoint=service_checkpoint, allow_adapters_off=False)
    health = client.get("/healthz").json()
    assert health["adapters"] == {"on": True}
    assert "adapters_off" not in client.get("/v1/models").json()
    assert 'data-testid="adapters-off"' not in client.get("/admin").text
