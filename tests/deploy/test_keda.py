"""KEDA ScaledObjects of overlays/scale, validated offline.

kubernetes-validate has no schema for KEDA's custom resources (it only warns), so the
ScaledObjects are checked here: against a model of the part of KEDA's ``keda.sh/v1alpha1``
ScaledObject schema we use (unknown fields refused, as the CRD's structural schema does),
against KEDA's documented metadata of the ``redis-cluster-streams`` trigger, and against the
rest of the rendering and the code: each one scales a rendered worker Deployment that no
longer sets ``replicas``, reads its addresses from an environment variable that container
has, and watches exactly the streams its service's consumer group reads (common.contracts),
under the cluster's bus prefix.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.contracts import ALL_MESSAGES
from common.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "scale"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScaleTargetRef(Strict):
    name: str
    apiVersion: str | None = None  # noqa: N815 - the CRD's field names
    kind: str | None = None
    envSourceContainerName: str | None = None  # noqa: N815


class StreamsMetadata(Strict):
    """KEDA's redis-cluster-streams trigger (keda.sh/docs/scalers/redis-cluster-streams)."""

    addresses: str | None = None
    addressesFromEnv: str | None = None  # noqa: N815
    passwordFromEnv: str | None = None  # noqa: N815
    stream: str
    consumerGroup: str  # noqa: N815
    lagCount: str | None = Field(default=None, pattern=r"^[1-9][0-9]*$")  # noqa: N815
    pendingEntriesCount: str | None = Field(default=None, pattern=r"^[1-9][0-9]*$")  # noqa: N815
    activationLagCount: str | None = Field(default=None, pattern=r"^[0-9]+$")  # noqa: N815
    enableTLS: Literal["true", "false"] | None = None  # noqa: N815


class Trigger(Strict):
    type: Literal["redis-cluster-streams"]
    metadata: StreamsMetadata
    name: str | None = None


class ScalingPolicy(Strict):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    periodSeconds: int = Field(gt=0, le=1800)  # noqa: N815


class ScalingRules(Strict):
    stabilizationWindowSeconds: int | None = Field(default=None, ge=0, le=3600)  # noqa: N815
    policies: list[ScalingPolicy] | None = None


class Behavior(Strict):
    scaleDown: ScalingRules | None = None  # noqa: N815
    scaleUp: ScalingRules | None = None  # noqa: N815


class HpaConfig(Strict):
    behavior: Behavior | None = None


class Advanced(Strict):
    horizontalPodAutoscalerConfig: HpaConfig | None = None  # noqa: N815
    restoreToOriginalReplicaCount: bool | None = None  # noqa: N815


class ScaledObjectSpec(Strict):
    scaleTargetRef: ScaleTargetRef  # noqa: N815
    minReplicaCount: int = Field(ge=0)  # noqa: N815
    maxReplicaCount: int = Field(ge=1)  # noqa: N815
    pollingInterval: int | None = Field(default=None, ge=1)  # noqa: N815
    cooldownPeriod: int | None = Field(default=None, ge=0)  # noqa: N815
    advanced: Advanced | None = None
    triggers: list[Trigger] = Field(min_length=1)


class Metadata(BaseModel):
    name: str
    namespace: str
    labels: dict[str, str] = {}


class ScaledObject(Strict):
    apiVersion: Literal["keda.sh/v1alpha1"]  # noqa: N815
    kind: Literal["ScaledObject"]
    metadata: Metadata
    spec: ScaledObjectSpec


def render() -> list[dict[str, Any]]:
    result = subprocess.run(  # noqa: S603 - our own fixed command
        [KUBECTL, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def streams_read_by(group: str) -> set[str]:
    return {message.STREAM for message in ALL_MESSAGES if group in message.CONSUMERS}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    if not Path(KUBECTL).exists():
        pytest.fail("kubectl is needed to render the overlays (make k8s-check installs it)")
    return render()


def scaled_objects(docs: list[dict[str, Any]]) -> list[ScaledObject]:
    return [ScaledObject.model_validate(doc) for doc in docs if doc["kind"] == "ScaledObject"]


def test_every_worker_is_scaled_on_its_group_lag_on_every_stream_it_reads(
    rendered: list[dict[str, Any]],
) -> None:
    objects = scaled_objects(rendered)
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    workers = {name for name in deployments if name.endswith("-worker")}
    assert {o.spec.scaleTargetRef.name for o in objects} == workers
    prefix = ServiceSettings(redis={"cluster_nodes": "seed:1"}).bus.stream_prefix

    for scaled in objects:
        target = deployments[scaled.spec.scaleTargetRef.name]
        service = target["metadata"]["labels"]["app.kubernetes.io/name"]
        assert scaled.metadata.namespace == target["metadata"]["namespace"]
        assert "replicas" not in target["spec"], "KEDA owns the count; replicas would fight it"
        assert 1 <= scaled.spec.minReplicaCount <= scaled.spec.maxReplicaCount
        env = {e["name"] for e in target["spec"]["template"]["spec"]["containers"][0]["env"]}
        watched = set()
        for trigger in scaled.spec.triggers:
            meta = trigger.metadata
            assert meta.consumerGroup == service
            assert meta.addressesFromEnv in env, f"{meta.addressesFromEnv} not in {service}"
            assert meta.passwordFromEnv is None or meta.passwordFromEnv in env
            assert meta.lagCount is not None, "scale on lag, not on pending entries"
            assert meta.stream.startswith(prefix)
            watched.add(meta.stream.removeprefix(prefix))
        assert watched == streams_read_by(service), service


def test_the_apis_and_workers_get_the_cluster_and_the_lists_the_replica(
    rendered: list[dict[str, Any]],
) -> None:
    for doc in rendered:
        if doc["kind"] != "Deployment":
            continue
        service = doc["metadata"]["labels"]["app.kubernetes.io/name"]
        if service in ("gateway", "pgbouncer"):
            continue  # no Redis: the gateway stores nothing, PgBouncer only pools Postgres
        env = {e["name"] for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert f"{service.upper()}_REDIS_CLUSTER_NODES" in env
        if doc["metadata"]["name"] in ("orders-api", "notifications-api"):
            assert f"{service.upper()}_DATABASE_REPLICA_URL" in env


def test_the_model_refuses_what_the_crd_refuses(rendered: list[dict[str, Any]]) -> None:
    [doc, *_] = [d for d in rendered if d["kind"] == "ScaledObject"]
    broken: list[dict[str, Any]] = []
    unknown = yaml.safe_load(yaml.safe_dump(doc))
    unknown["spec"]["maxReplicas"] = 3  # the HPA's name, not KEDA's
    broken.append(unknown)
    no_group = yaml.safe_load(yaml.safe_dump(doc))
    del no_group["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    broken.append(no_group)
    wrong_type = yaml.safe_load(yaml.safe_dump(doc))
    wrong_type["spec"]["triggers"][0]["metadata"]["lagCount"] = "lots"
    broken.append(wrong_type)
    for candidate in broken:
        with pytest.raises(ValidationError):
            ScaledObject.model_validate(candidate)
