"""Kubernetes rolling updates that drain (DESIGN.md section 11), in every rendered overlay.

* Every Deployment rolls with ``maxUnavailable: 0`` and a surge: capacity never drops.
* An API's ``preStop`` creates the drain file its ``/readyz`` watches (``<SERVICE>_DRAIN_FILE``,
  common.http), so readiness is false before SIGTERM; then it waits for the endpoint removal
  to spread. Its grace period covers that wait plus uvicorn's graceful shutdown.
* A worker's grace period covers its whole shutdown (common.worker: housekeeping, in-flight
  handlers and timers, each up to ``bus.shutdown_timeout_seconds``, plus one blocking read).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.http import GRACEFUL_SHUTDOWN_SECONDS
from common.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(
    path for path in (REPO / "deploy" / "k8s" / "overlays").iterdir() if path.is_dir()
)
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
MARGIN_SECONDS = 5
Doc = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS, ids=lambda path: path.name)
def deployments(request: pytest.FixtureRequest) -> list[Doc]:
    if not Path(KUBECTL).exists():
        pytest.fail("kubectl is needed to render the overlays (make k8s-check installs it)")
    result = subprocess.run(  # noqa: S603 - our own fixed command
        [KUBECTL, "kustomize", str(request.param)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    found = [doc for doc in docs if doc["kind"] == "Deployment" and _component(doc)]
    assert found
    return found


def _component(doc: Doc) -> str | None:
    component: str | None = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")
    if component == "gateway":
        return "api"  # an HTTP front like the services' APIs, drained the same way
    return component if component in ("api", "worker") else None


def _container(doc: Doc) -> Doc:
    container: Doc = doc["spec"]["template"]["spec"]["containers"][0]
    return container


def _env(container: Doc) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def test_every_deployment_rolls_without_losing_capacity(deployments: list[Doc]):
    for doc in deployments:
        strategy = doc["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate", doc["metadata"]["name"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, doc["metadata"]["name"]
        assert int(strategy["rollingUpdate"]["maxSurge"]) >= 1, doc["metadata"]["name"]


def test_an_api_is_unready_before_sigterm_and_given_time_to_finish(deployments: list[Doc]):
    for doc in (d for d in deployments if _component(d) == "api"):
        name, container = doc["metadata"]["name"], _container(doc)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        drain_files = [v for k, v in _env(container).items() if k.endswith("_DRAIN_FILE")]
        assert len(drain_files) == 1, f"{name}: no <SERVICE>_DRAIN_FILE"
        command = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        assert f"touch {drain_files[0]}" in command, name
        sleep = re.search(r"sleep (\d+)", command)
        assert sleep is not None, f"{name}: preStop does not wait for the endpoint removal"
        grace = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        needed = int(sleep[1]) + GRACEFUL_SHUTDOWN_SECONDS + MARGIN_SECONDS
        assert grace >= needed, f"{name}: grace {grace}s < {needed}s"


def test_a_workers_grace_period_covers_its_whole_shutdown(deployments: list[Doc]):
    defaults = ServiceSettings()
    for doc in (d for d in deployments if _component(d) == "worker"):
        name, container = doc["metadata"]["name"], _container(doc)
        env = _env(container)
        shutdown = float(
            next(
                (v for k, v in env.items() if k.endswith("_BUS_SHUTDOWN_TIMEOUT_SECONDS")),
                defaults.bus.shutdown_timeout_seconds,
            )
        )
        needed = 3 * shutdown + defaults.bus.block_ms / 1000 + MARGIN_SECONDS
        grace = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= needed, f"{name}: grace {grace}s < {needed}s"
