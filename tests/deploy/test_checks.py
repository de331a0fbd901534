"""deploy/check.sh: each group's tools and reference checks are wired in and fail on a tree
broken on purpose.

The real tree passing is `make k8s-check`'s first step (`bash deploy/check.sh`), not repeated
here. Each rule of the reference checks (scripts/deploy_checks.py) is tested on its own in
test_deploy_checks.py; here one breakage per tool and per group shows the script runs it and
reports its failure (each run costs seconds: checkov and kubernetes-validate start slowly).

Each test copies what the checks read (deploy/ with its Dockerfile, the workspace manifests,
.hadolint.yaml) into a temporary directory, breaks it there, and runs the script with
``--root`` on that copy and ``--only`` the group that must catch it. The tools are the pinned
ones the script runs through ``uv tool run`` (cached after the first run); kubectl must be on
PATH or at /usr/bin/kubectl.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "deploy" / "check.sh"
DOCKERFILE = "deploy/Dockerfile"  # the one Dockerfile, the service a build argument
SERVICES = ("users", "orders", "notifications")
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
BASH = shutil.which("bash") or "/bin/bash"
Json = dict[str, Any]


def run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of our own commands (fixed arguments, no shell)."""
    return subprocess.run(  # noqa: S603
        args, input=stdin, capture_output=True, text=True, timeout=600, check=False
    )


def run_check(root: Path, *groups: str) -> subprocess.CompletedProcess[str]:
    args = [BASH, str(CHECK), "--root", str(root)]
    for group in groups:
        args += ["--only", group]
    return run(args)


def failures(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The descriptions of the checks that printed FAIL."""
    return [
        line.split(None, 2)[2] for line in result.stdout.splitlines() if line.startswith("FAIL")
    ]


def assert_fails(result: subprocess.CompletedProcess[str], check: str, evidence: str) -> None:
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert any(check in line for line in failures(result)), report
    assert evidence in report, report


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of everything deploy/check.sh reads."""
    root = tmp_path / "repo"
    shutil.copytree(
        REPO / "deploy", root / "deploy", ignore=shutil.ignore_patterns("__pycache__", ".env")
    )
    for name in (".hadolint.yaml", ".dockerignore", "pyproject.toml"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, root / name)
    for manifest in [*REPO.glob("libs/*/pyproject.toml"), *REPO.glob("services/*/pyproject.toml")]:
        target = root / manifest.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(manifest, target)
    return root


def edit(path: Path, change: Callable[[str], str]) -> None:
    before = path.read_text()
    after = change(before)
    assert after != before, f"the edit did not change {path}"
    path.write_text(after)


def replace(old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return change


def remove_lines(predicate: Callable[[str], bool]) -> Callable[[str], str]:
    return lambda text: "".join(line for line in text.splitlines(True) if not predicate(line))


# ---- the real tree ------------------------------------------------------------------------------


def test_unknown_group_is_a_usage_error(tree: Path) -> None:
    result = run_check(tree, "nonsense")
    assert result.returncode == 2
    assert "unknown group" in result.stderr


# ---- k8s: render, schema, references ------------------------------------------------------------


def test_k8s_rejects_an_unknown_field_in_a_deployment(tree: Path) -> None:
    edit(
        tree / "deploy/k8s/base/users/worker-deployment.yaml",
        replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 2\n"),
    )
    result = run_check(tree, "k8s")
    assert_fails(result, "validate overlays/dev against Kubernetes", "replicaz")
    assert_fails(result, "validate overlays/prod against Kubernetes", "replicaz")


def test_k8s_rejects_an_overlay_that_does_not_render(tree: Path) -> None:
    edit(
        tree / "deploy/k8s/base/notifications/kustomization.yaml",
        replace("  - pdb.yaml\n", "  - pdb.yaml\n  - missing.yaml\n"),
    )
    result = run_check(tree, "k8s")
    assert_fails(result, "render overlays/dev", "missing.yaml")
    assert_fails(result, "validate overlays/dev", "did not render")


def test_k8s_rejects_a_reference_to_a_missing_secret_key(tree: Path) -> None:
    edit(
        tree / "deploy/k8s/base/users/api-deployment.yaml",
        replace("key: USERS_REDIS_URL", "key: USERS_REDIS"),
    )
    assert_fails(
        run_check(tree, "k8s"), "references and invariants of overlays/dev", "no key USERS_REDIS"
    )


# ---- security: checkov --------------------------------------------------------------------------


def test_security_rejects_a_privileged_container_and_one_without_a_security_context(
    tree: Path,
) -> None:
    # Two breakages in two workloads, one checkov run: each must be named.
    edit(
        tree / "deploy/k8s/base/orders/worker-deployment.yaml",
        replace("privileged: false", "privileged: true"),
    )
    path = tree / "deploy/k8s/base/users/api-deployment.yaml"
    text = path.read_text()
    # Drop the pod's and the container's securityContext blocks (and so runAsNonRoot).
    kept, skipping = [], None
    for line in text.splitlines(True):
        indent = len(line) - len(line.lstrip())
        if skipping is not None and (indent > skipping or not line.strip()):
            continue
        skipping = None
        if line.strip() == "securityContext:":
            skipping = indent
            continue
        kept.append(line)
    assert "securityContext" not in "".join(kept)
    path.write_text("".join(kept))
    result = run_check(tree, "security")
    assert_fails(result, "checkov Kubernetes policies", "Deployment.shop-dev.users-api")
    assert "CKV_K8S_23" in result.stdout, result.stdout  # admission of root containers
    assert "CKV_K8S_16" in result.stdout, result.stdout  # privileged containers


# ---- docker: hadolint, checkov, consistency -----------------------------------------------------


def test_docker_rejects_an_unpinned_base_image_and_an_image_without_a_user(tree: Path) -> None:
    # One breakage for the reference checks, one for checkov, in one run: both must be named.
    edit(
        tree / DOCKERFILE,
        lambda text: re.sub(r"(?m)^ARG PYTHON_IMAGE=.*$", "ARG PYTHON_IMAGE=python:latest", text),
    )
    edit(tree / DOCKERFILE, remove_lines(lambda line: line.startswith("USER ")))
    result = run_check(tree, "docker")
    assert_fails(result, "base images are build arguments", "python:latest is not pinned")
    assert_fails(result, "checkov Dockerfile policies", "CKV_DOCKER_3")


def test_docker_lints_and_pins_the_pgbouncer_dockerfile_too(tree: Path) -> None:
    edit(
        tree / "deploy/pgbouncer/Dockerfile",
        lambda text: re.sub(r"(?m)^(ARG DEBIAN_IMAGE=[^@]*)@sha256:[0-9a-f]+$", r"\1", text),
    )
    edit(tree / "deploy/pgbouncer/Dockerfile", replace("# hadolint ignore=DL3008\n", ""))
    result = run_check(tree, "docker")
    assert_fails(result, "hadolint deploy/pgbouncer/Dockerfile", "DL3008")
    assert_fails(
        result,
        "base images are build arguments",
        "deploy/pgbouncer/Dockerfile: the runtime base debian:12.12-slim is not pinned by digest",
    )


def test_docker_rejects_a_missing_dockerfile(tree: Path) -> None:
    (tree / DOCKERFILE).unlink()
    assert_fails(run_check(tree, "docker"), "deploy/Dockerfile exists", "no deploy/Dockerfile")


# ---- compose ------------------------------------------------------------------------------------


def test_compose_rejects_an_unknown_key(tree: Path) -> None:
    edit(tree / "deploy/compose.yaml", replace("    shm_size: 128m\n", "    shm_sise: 128m\n"))
    result = run_check(tree, "compose")
    assert_fails(result, "against the compose specification", "shm_sise")


def test_compose_rejects_a_dependency_on_a_missing_service(tree: Path) -> None:
    # Valid against the schema; only the reference check sees the typo.
    edit(
        tree / "deploy/compose.yaml",
        replace(
            "  redis:\n    condition: service_healthy\n",
            "  redis:\n    condition: service_healthy\n"
            "  postgress:\n    condition: service_healthy\n",
        ),
    )
    result = run_check(tree, "compose")
    assert_fails(result, "references and hardening", "undefined service postgress")
    assert not any("specification" in line for line in failures(result)), result.stdout


def test_compose_checks_the_pooled_override_merged_onto_the_base(tree: Path) -> None:
    # A typo only the schema sees, and a dependency on a service without a healthcheck only the
    # reference check of the merged model sees (the healthcheck is the override's).
    edit(
        tree / "deploy/compose.pooled.yaml",
        replace("    read_only: true\n", "    read_onyl: true\n"),
    )
    edit(
        tree / "deploy/compose.pooled.yaml",
        remove_lines(lambda line: "exec 3<>/dev/tcp/127.0.0.1/6432" in line),
    )
    edit(
        tree / "deploy/compose.pooled.yaml", replace("    healthcheck:\n", "    healthcheck_off:\n")
    )
    result = run_check(tree, "compose")
    assert_fails(
        result, "compose.pooled.yaml (merged) against the compose specification", "read_onyl"
    )
    assert_fails(
        result,
        "compose.pooled.yaml (merged) references and hardening",
        "waits for pgbouncer to be healthy, but pgbouncer has no healthcheck",
    )
    # The base file alone still passes: the breakage is the override's.
    base_checks = {
        "deploy/compose.yaml against the compose specification",
        "deploy/compose.yaml references and hardening",
    }
    assert not base_checks & {line.rsplit(" (", 1)[0] for line in failures(result)}, result.stdout


def test_compose_rejects_an_image_variable_without_a_pinned_default(tree: Path) -> None:
    edit(
        tree / "deploy/compose.yaml",
        replace("${REDIS_IMAGE:-redis:7.4.5-bookworm}", "${REDIS_IMAGE}"),
    )
    result = run_check(tree, "compose")
    assert_fails(result, "references and hardening", "has no pinned default")


# ---- what the overlays contain ------------------------------------------------------------------


def render(overlay: str) -> list[Json]:
    """The overlay's objects, as JSON (kubectl converts offline with --local)."""
    manifest = run([KUBECTL, "kustomize", str(REPO / "deploy/k8s/overlays" / overlay)])
    assert manifest.returncode == 0, manifest.stderr
    converted = run(
        [KUBECTL, "annotate", "--local", "-f", "-", "-o", "json", "rendered-by=tests"],
        stdin=manifest.stdout,
    )
    assert converted.returncode == 0, converted.stderr
    text, decoder, objects, index = converted.stdout, json.JSONDecoder(), list[Json](), 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        obj, index = decoder.raw_decode(text, index)
        objects.extend(obj["items"] if obj.get("kind") == "List" else [obj])
    return objects


def names(objects: list[Json], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o["kind"] == kind}


def test_dev_overlay_has_every_kind_of_object() -> None:
    objects = render("dev")
    deployments = names(objects, "Deployment")
    for service in SERVICES:
        assert {f"{service}-api", f"{service}-worker"} <= deployments
        assert service in names(objects, "Service")
        assert service in names(objects, "ServiceAccount")
        assert any(n.startswith(f"{service}-config-") for n in names(objects, "ConfigMap"))
        assert f"{service}-migrate" in names(objects, "Job")
        assert f"{service}-api" in names(objects, "HorizontalPodAutoscaler")
        assert {f"{service}-api", f"{service}-worker"} <= names(objects, "PodDisruptionBudget")
    assert {"postgres", "redis"} <= names(objects, "StatefulSet")
    assert {"postgres", "redis"} <= names(objects, "Service")
    assert {
        "default-deny-all",
        "allow-dns-egress",
        "notifications-worker-webhooks-egress",
        "allow-ingress-controller-to-gateway",
        "allow-gateway-to-apis",
        "allow-gateway-egress-to-apis",
    } <= names(objects, "NetworkPolicy")
    assert "gateway" in deployments
    assert "gateway" in names(objects, "Service")
    assert "gateway" in names(objects, "HorizontalPodAutoscaler")
    (ingress,) = (o for o in objects if o["kind"] == "Ingress")
    routes = {
        p["path"]: p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert routes == {"/": "gateway"}  # the one front door
    assert any(n.startswith("app-credentials-") for n in names(objects, "Secret"))
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"shop-dev"}


def test_prod_overlay_commits_no_secret_and_no_in_cluster_data_stores() -> None:
    objects = render("prod")
    kinds = Counter(o["kind"] for o in objects)
    assert kinds["Secret"] == 0, "production credentials must never be committed"
    assert kinds["StatefulSet"] == 0
    assert kinds["Deployment"] == 7  # the gateway, and an API and a worker per service
    assert kinds["Job"] == 3
    assert kinds["Ingress"] == 1
    (ingress,) = (o for o in objects if o["kind"] == "Ingress")
    assert ingress["spec"]["tls"][0]["hosts"] == ["shop.example.com"]
    for workload in (o for o in objects if o["kind"] in ("Deployment", "Job")):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert container["image"].startswith("registry.example.com/shop/")
            assert container["imagePullPolicy"] == "Always"
