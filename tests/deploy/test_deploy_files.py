"""Deployment files: the compose file validates (with `docker compose config` when the plugin is there)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="docker compose plugin not installed")
def test_docker_compose_config_validates() -> None:
    out = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_compose_topology() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "worker", "postgres", "redis", "migrate", "vllm", "vllm-cpu"} <= set(services)
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["api"]["command"] == ["code2lora", "serve"]
    assert services["worker"]["command"] == ["code2lora", "worker"]
    for name in ("api", "postgres", "redis", "vllm"):
        assert "healthcheck" in services[name], name
    for name in ("api", "worker", "vllm"):  # artifacts shared with vLLM
        assert any(str(v).startswith("artifacts:") for v in services[name]["volumes"]), name
    for name in ("api", "worker", "migrate"):
        dockerfile = ROOT / services[name]["build"]["dockerfile"]
        assert dockerfile.exists()
        text = dockerfile.read_text()
        assert "torch==2.13.0" in text and "USER " in text


def test_k8s_manifests_parse() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/code2lora.yaml").read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "code2lora-api") in kinds and ("Deployment", "code2lora-worker") in kinds
    vllm = next(d for d in docs if d["metadata"]["name"] == "code2lora-vllm" and d["kind"] == "StatefulSet")
    assert vllm["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    # replicas addressed one by one (adapter affinity): a headless Service and one URL per StatefulSet pod
    service = next(d for d in docs if d["metadata"]["name"] == vllm["spec"]["serviceName"] and d["kind"] == "Service")
    assert service["spec"]["clusterIP"] == "None"
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    port = service["spec"]["ports"][0]["port"]
    assert config["CODE2LORA_VLLM_URLS"].split(",") == [
        f"http://code2lora-vllm-{i}.{service['metadata']['name']}:{port}" for i in range(vllm["spec"]["replicas"])]
    api = next(d for d in docs if d["metadata"]["name"] == "code2lora-api" and d["kind"] == "Deployment")
    assert api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
