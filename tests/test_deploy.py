"""deploy/: the Kubernetes manifests validate against the Kubernetes schemas (offline, with
kubernetes-validate, strict: no unknown fields), agree with each other and with the image's
configuration, and the image runs as a non-root user from a slim base."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from memlease.server.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.30.0"
VERSIONS = (KUBERNETES, kubernetes_validate.latest_version())


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _by_kind() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in map(_load, MANIFESTS)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_each_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    kubernetes_validate.validate(_load(path), version, strict=True)


def test_the_validator_would_catch_a_mistake() -> None:
    broken = _by_kind()["StatefulSet"]
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_a_statefulset_behind_a_headless_service_with_a_disruption_budget() -> None:
    kinds = _by_kind()
    assert set(kinds) == {"Service", "StatefulSet", "PodDisruptionBudget"}
    service, statefulset, budget = (
        kinds["Service"],
        kinds["StatefulSet"],
        kinds["PodDisruptionBudget"],
    )
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1

    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    port = load_config(DEPLOY / "memlease.toml").listeners[0].port
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == container["ports"][0]["name"]
    assert statefulset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_image_config_listens_on_every_address_and_fits_the_pod() -> None:
    from memlease.server.worst_case import worst_case_memory

    config = load_config(DEPLOY / "memlease.toml")
    assert config.host == "0.0.0.0"
    assert [listener.protocol for listener in config.listeners] == ["uuid"]
    (container,) = _by_kind()["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    assert limit == "1Gi" and worst_case_memory(config).total <= 1 << 30
    text = (DEPLOY / "memlease.toml").read_text()
    assert "# [tls]" in text and "NetworkPolicy" in text
    grace = _by_kind()["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert config.shutdown_grace < grace


def test_the_image_runs_as_a_non_root_user_from_a_slim_base() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert bases and all(base.endswith("-slim") for base in bases)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and not users[-1].startswith(("0", "root"))
    assert "COPY deploy/memlease.toml /etc/memlease/memlease.toml" in text
