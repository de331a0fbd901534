"""scripts/deploy_checks.py, the checks of deploy/check.sh that no tool does, on small inputs.

tests/deploy/test_checks.py breaks a copy of the real tree and runs the whole script; here each
check meets a minimal object graph built for it, one flaw at a time, so that what it catches
(and what it lets through) is visible at a glance. The rendering of the real dev overlay, and
the real compose files (compose.pooled.yaml merged onto compose.yaml) and Dockerfiles, pass.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from common.testing.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


def load_module() -> ModuleType:
    return load_script(REPO / "scripts" / "deploy_checks.py", "deploy_checks")


checks = load_module()

# ---- a minimal, valid rendering: gateway and one API behind an Ingress -------------------------

HARDENED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESOURCES = {
    "requests": {"cpu": "100m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "256Mi"},
}
PROBE = {"httpGet": {"path": "/healthz", "port": "http"}}


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "shop",
    }


def deployment(name: str, app: str, component: str) -> Obj:
    pod_labels = labels(app, component)
    container = {
        "name": component,
        "image": f"shop/{app}:1",
        "ports": [{"name": "http", "containerPort": 8000}],
        "securityContext": dict(HARDENED),
        "resources": copy.deepcopy(RESOURCES),
        "startupProbe": PROBE,
        "readinessProbe": PROBE,
        "livenessProbe": PROBE,
        "env": [
            {
                "name": "DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": "app-credentials", "key": "DATABASE_URL"}},
            }
        ],
    }
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": app,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                },
            },
        },
    }


def named(kind: str, name: str, spec: Obj | None = None, **extra: Any) -> Obj:
    obj: Obj = {"kind": kind, "metadata": {"name": name}, **extra}
    if spec is not None:
        obj["spec"] = spec
    return obj


def rendering() -> list[Obj]:
    gateway, api = labels("gateway", "gateway"), labels("orders", "api")
    gateway_peer = {"matchLabels": checks.GATEWAY_LABELS}
    return [
        named("Secret", "app-credentials", data={"DATABASE_URL": "eA=="}),
        named("ServiceAccount", "gateway"),
        named("ServiceAccount", "orders"),
        deployment("gateway", "gateway", "gateway"),
        deployment("orders-api", "orders", "api"),
        named(
            "Service",
            "gateway",
            {"selector": gateway, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        ),
        named(
            "Service",
            "orders",
            {"selector": api, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        ),
        named(
            "Ingress",
            "shop",
            {
                "rules": [
                    {
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "backend": {
                                        "service": {"name": "gateway", "port": {"name": "http"}}
                                    },
                                }
                            ]
                        }
                    }
                ]
            },
        ),
        named(
            "HorizontalPodAutoscaler",
            "orders-api",
            {"scaleTargetRef": {"kind": "Deployment", "name": "orders-api"}},
        ),
        named("PodDisruptionBudget", "gateway", {"selector": {"matchLabels": gateway}}),
        named("PodDisruptionBudget", "orders-api", {"selector": {"matchLabels": api}}),
        named(
            "NetworkPolicy",
            "to-gateway",
            {
                "podSelector": {"matchLabels": gateway},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"namespaceSelector": {}}]}],
            },
        ),
        named(
            "NetworkPolicy",
            "gateway-to-apis",
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "api"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": gateway_peer}]}],
            },
        ),
    ]


def find(docs: list[Obj], kind: str, name: str) -> Obj:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def container(docs: list[Obj], name: str) -> Obj:
    found: Obj = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return found


def problems(docs: list[Obj]) -> list[str]:
    errors, _ = checks.k8s_references(docs)
    return list(errors)


# ---- Kubernetes ---------------------------------------------------------------------------------


def test_a_consistent_rendering_has_no_problem() -> None:
    errors, summary = checks.k8s_references(rendering())
    assert errors == []
    assert summary == "13 objects, 2 workloads: references and invariants hold"


def test_selectors_follow_kubernetes_semantics() -> None:
    pod = {"app": "orders", "tier": "api"}
    assert checks.matches(None, pod)
    assert checks.matches({"matchLabels": {"app": "orders"}}, pod)
    assert not checks.matches({"matchLabels": {"app": "users"}}, pod)
    expression = {"key": "tier", "operator": "In", "values": ["api", "worker"]}
    assert checks.matches({"matchExpressions": [expression]}, pod)
    assert not checks.matches({"matchExpressions": [{**expression, "operator": "NotIn"}]}, pod)
    assert not checks.matches(
        {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, pod
    )
    assert checks.matches({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, pod)


def test_a_missing_secret_key_is_named() -> None:
    docs = rendering()
    find(docs, "Secret", "app-credentials")["data"] = {"REDIS_URL": "eA=="}
    assert "Deployment/orders-api: Secret app-credentials has no key DATABASE_URL" in problems(docs)


def test_a_secret_declared_external_on_the_namespace_may_be_absent() -> None:
    docs = [d for d in rendering() if d["kind"] != "Secret"]
    assert any("neither rendered nor declared external" in e for e in problems(docs))
    note = {"shop/external-secrets": "app-credentials"}
    docs.append({"kind": "Namespace", "metadata": {"name": "shop", "annotations": note}})
    assert problems(docs) == []


def test_hardening_resources_and_probes_are_required() -> None:
    docs = rendering()
    api = container(docs, "orders-api")
    api["securityContext"] = {"capabilities": {"drop": ["NET_RAW"]}}
    del api["resources"]["limits"]["memory"], api["livenessProbe"]
    api["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": "web"}}
    found = problems(docs)
    where = "Deployment/orders-api: container api: "
    for message in (
        "runAsNonRoot is not true",
        "root file system is writable",
        "allowPrivilegeEscalation is not false",
        "does not drop ALL capabilities",
        "seccomp profile is not RuntimeDefault",
        "no memory limit",
        "no livenessProbe",
        "readinessProbe uses unknown port web",
    ):
        assert where + message in found, found


def test_service_links_and_token_mounts_are_refused() -> None:
    docs = rendering()
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    pod["enableServiceLinks"] = True
    del pod["automountServiceAccountToken"]
    found = problems(docs)
    assert "Deployment/gateway: mounts a service account token" in found
    assert any(e.startswith("Deployment/gateway: service links on") for e in found)


def test_an_ingress_path_must_reach_the_gateway() -> None:
    docs = rendering()
    backend = find(docs, "Ingress", "shop")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    backend["service"]["name"] = "orders"
    assert "Ingress/shop: path / goes to orders, not the gateway" in problems(docs)
    backend["service"]["name"] = "gatewy"
    assert "Ingress/shop: path / goes to missing Service gatewy" in problems(docs)


def test_only_the_gateway_may_reach_an_api() -> None:
    docs = rendering()
    policy = find(docs, "NetworkPolicy", "gateway-to-apis")
    policy["spec"]["ingress"] = [
        {"from": [{"namespaceSelector": {"matchLabels": {"x": "ingress"}}}]}
    ]
    assert any("reach an API; only the gateway may" in e for e in problems(docs))
    policy["spec"]["ingress"] = [{"ports": [{"port": 8000}]}]
    assert (
        "NetworkPolicy/gateway-to-apis: lets anyone reach an API (an ingress rule without `from`)"
        in problems(docs)
    )
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    policy["spec"]["ingress"] = [{"from": [monitoring]}]
    assert problems(docs) == []


def test_an_api_is_scaled_by_an_hpa_and_covered_by_a_pdb_and_a_policy() -> None:
    docs = [
        d
        for d in rendering()
        if d["kind"] not in ("HorizontalPodAutoscaler", "PodDisruptionBudget")
    ]
    find(docs, "Deployment", "orders-api")["spec"]["replicas"] = 3
    docs = [d for d in docs if d["metadata"]["name"] != "to-gateway"]
    found = problems(docs)
    assert "Deployment/orders-api: API without a HorizontalPodAutoscaler" in found
    assert "Deployment/orders-api: sets replicas although an HPA owns the count" in found
    assert "Deployment/gateway: no PodDisruptionBudget selects its pods" in found
    assert "Deployment/gateway: no NetworkPolicy governs its ingress" in found


def test_selectors_that_select_nothing_are_reported() -> None:
    docs = rendering()
    find(docs, "Service", "orders")["spec"]["selector"] = {"app.kubernetes.io/name": "ordres"}
    find(docs, "PodDisruptionBudget", "gateway")["spec"]["selector"] = {"matchLabels": {"a": "b"}}
    find(docs, "HorizontalPodAutoscaler", "orders-api")["spec"]["scaleTargetRef"]["name"] = "ordrs"
    found = problems(docs)
    assert "Service/orders: selects no pod" in found
    assert "PodDisruptionBudget/gateway: selects no pod" in found
    assert "HorizontalPodAutoscaler/orders-api: scales missing Deployment ordrs" in found


# ---- compose ------------------------------------------------------------------------------------

HARDENED_SERVICE = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
}


def compose_problems(doc: Obj, where: Path) -> list[str]:
    errors, _ = checks.compose_references(doc, where)
    return list(errors)


def test_compose_dependencies_images_and_volumes(tmp_path: Path) -> None:
    doc = {
        "services": {
            "db": {"image": "${DB_IMAGE}", "healthcheck": {"disable": True}},
            "cache": {"image": "redis", "restart": "always"},
            "app": {
                "image": "shop/app:1",
                "depends_on": {
                    "db": {"condition": "service_healthy"},
                    "cache": {"condition": "service_completed_successfully"},
                    "queue": {"condition": "service_started"},
                },
                "volumes": ["data:/data", "./conf:/conf"],
            },
        }
    }
    assert sorted(compose_problems(doc, tmp_path)) == sorted(
        [
            "db: image '${DB_IMAGE}' has no pinned default",
            "cache: image 'redis' is not pinned to a tag",
            "app: waits for db to be healthy, but db has no healthcheck",
            "app: waits for one-shot cache, whose restart policy would rerun it forever",
            "app: depends on undefined service queue",
            "app: uses undeclared volume data",
        ]
    )


def test_compose_built_services_are_hardened_and_find_their_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    built = {"build": {"context": ".", "dockerfile": "Dockerfile"}, **HARDENED_SERVICE}
    assert compose_problems({"services": {"api": built}}, tmp_path) == []
    weak = {"build": {"context": ".", "dockerfile": "missing/Dockerfile"}, "user": "0:0"}
    found = compose_problems({"services": {"api": weak}}, tmp_path)
    assert any(e.startswith("api: no Dockerfile at ") for e in found)
    for message in (
        "api: root file system is writable (read_only: true)",
        "api: does not drop ALL capabilities",
        "api: no-new-privileges is not set",
        "api: runs as root",
    ):
        assert message in found


def test_the_real_compose_file_holds() -> None:
    path = REPO / "deploy" / "compose.yaml"
    errors, summary = checks.compose_references(yaml.safe_load(path.read_text()), path.parent)
    assert errors == []
    assert "services: dependencies, images, hardening and volumes hold" in summary


# ---- compose override files: merged as compose merges them -------------------------------------


def merged(*texts: str) -> Obj:
    model: Obj = {}
    for text in texts:
        model = checks.merge_compose(model, yaml.load(text, Loader=checks.ComposeLoader))  # noqa: S506 - a SafeLoader
    return model


def test_compose_merge_rules_and_tags() -> None:
    base = """
services:
  api:
    image: shop/api:1
    command: ["api", "--fast"]
    environment: [A=1, B=2]
    ports: ["127.0.0.1:8001:8001"]
    depends_on: [db]
    cap_drop: [ALL]
    healthcheck: {test: ["CMD", "true"], interval: 5s}
"""
    override = """
services:
  api:
    command: ["api"]
    environment: {B: "3", C: "4", A: !reset null}
    ports: !reset []
    depends_on: {cache: {condition: service_healthy}}
    cap_drop: [ALL, NET_RAW]
    healthcheck: {test: ["CMD", "false"]}
    labels: !override {x: "1"}
  cache:
    image: redis:7
"""
    api = merged(base, override)["services"]["api"]
    assert api["command"] == ["api"]  # replaced, not appended
    assert api["environment"] == {"B": "3", "C": "4"}  # list normalised, A reset
    assert "ports" not in api
    assert api["depends_on"] == {
        "db": {"condition": "service_started"},
        "cache": {"condition": "service_healthy"},
    }
    assert api["cap_drop"] == ["ALL", "NET_RAW"]  # appended, without repeats
    assert api["healthcheck"] == {"test": ["CMD", "false"], "interval": "5s"}
    assert api["labels"] == {"x": "1"}
    overridden = merged(base, "services:\n  api: !override {image: shop/api:2}\n")
    assert overridden["services"]["api"] == {"image": "shop/api:2"}


def test_the_pooled_override_holds_and_puts_pgbouncer_in_front_of_postgres() -> None:
    files = [REPO / "deploy" / "compose.yaml", REPO / "deploy" / "compose.pooled.yaml"]
    model = checks.load_compose(files)
    errors, _ = checks.compose_references(model, files[0].parent)
    assert errors == []
    services = model["services"]
    pgbouncer = services["pgbouncer"]
    assert pgbouncer["build"]["context"] == "pgbouncer"
    assert (files[0].parent / "pgbouncer" / "Dockerfile").is_file()
    assert pgbouncer["healthcheck"]["test"]
    assert "ports" not in pgbouncer  # inside the compose network only
    for name, service in services.items():
        env = service.get("environment") or {}
        prefixes = [k.removesuffix("_DATABASE_URL") for k in env if k.endswith("_DATABASE_URL")]
        if name == "pgbouncer" or not prefixes:
            continue
        (prefix,) = prefixes
        assert "@pgbouncer:6432/" in env[f"{prefix}_DATABASE_URL"], name
        assert "@postgres:5432/" in env[f"{prefix}_DATABASE_DIRECT_URL"], name
        if name.endswith("-migrate"):
            continue
        # Scalable: no host port, no fixed consumer name, and PgBouncer up first.
        assert "ports" not in service, name
        assert f"{prefix}_CONSUMER_NAME" not in env, name
        assert service["depends_on"]["pgbouncer"] == {"condition": "service_healthy"}, name
        assert f"{prefix}_DATABASE_DIRECT_URL" in pgbouncer["environment"], name


def test_the_merge_command_writes_a_model_without_tags(tmp_path: Path) -> None:
    base, override = tmp_path / "compose.yaml", tmp_path / "compose.more.yaml"
    base.write_text("services:\n  a:\n    image: x:1\n    ports: ['1:1']\n")
    override.write_text("services:\n  a:\n    ports: !reset []\n")
    out = tmp_path / "merged.yaml"
    assert checks.main(["compose-merge", str(out), str(base), str(override)]) == 0
    assert yaml.safe_load(out.read_text()) == {"services": {"a": {"image": "x:1"}}}


# ---- Dockerfile ---------------------------------------------------------------------------------

PINNED = """ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG PYTHON_IMAGE=python:3.11.14-slim@sha256:{digest}
FROM ${{UV_IMAGE}} AS uv
FROM ${{PYTHON_IMAGE}} AS build
FROM build AS test
FROM ${{PYTHON_IMAGE}} AS runtime
""".format(digest="a" * 64)


def test_pinned_build_arguments_pass() -> None:
    assert checks.dockerfile_base_images(PINNED, "Dockerfile") == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda t: t.replace("uv:0.13.9", "uv:latest"),
            "ghcr.io/astral-sh/uv:latest is not pinned",
        ),
        (lambda t: t.replace("uv:0.13.9", "uv"), "ghcr.io/astral-sh/uv is not pinned"),
        (
            lambda t: t.replace("@sha256:" + "a" * 64, ""),
            "the runtime base python:3.11.14-slim is not pinned by digest",
        ),
        (lambda t: "# syntax=docker/dockerfile:1\n" + t, "`# syntax=` needs a registry"),
        (
            lambda t: t.replace("ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9\n", ""),
            "FROM ${UV_IMAGE} has no ARG UV_IMAGE=",
        ),
        (
            lambda t: t.replace("ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9", "ARG UV_IMAGE="),
            "FROM ${UV_IMAGE} has no ARG UV_IMAGE=",
        ),
        (lambda t: t + "FROM debian\n", "base image debian is not pinned"),
    ],
)
def test_unpinned_bases_are_named(change: Any, problem: str) -> None:
    found = checks.dockerfile_base_images(change(PINNED), "Dockerfile")
    assert any(problem in e for e in found), found


def test_the_dependency_layer_copies_every_member() -> None:
    text = "COPY pyproject.toml uv.lock ./\nCOPY libs/common/pyproject.toml libs/common/\n"
    members = ["libs/common", "services/users"]
    assert checks.dockerfile_copies_workspace(text, "D", members) == [
        "D: does not COPY services/users/pyproject.toml services/users/"
    ]
    assert (
        checks.dockerfile_copies_workspace("", "D", [])[0]
        == "D: does not COPY pyproject.toml uv.lock ./"
    )


def test_the_real_dockerfile_holds_and_is_the_only_one() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert checks.dockerfile_base_images(text, "deploy/Dockerfile") == []
    members = checks.workspace_members(REPO)
    assert {"libs/common", "services/gateway", "services/users"} <= set(members)
    assert checks.dockerfile_copies_workspace(text, "deploy/Dockerfile", members) == []
    assert checks.extra_dockerfiles(REPO) == []


def test_the_pgbouncer_dockerfile_pins_its_base_and_is_no_service_dockerfile() -> None:
    text = (REPO / "deploy" / "pgbouncer" / "Dockerfile").read_text()
    assert checks.dockerfile_base_images(text, "deploy/pgbouncer/Dockerfile") == []
    assert "deploy/pgbouncer/Dockerfile" not in checks.extra_dockerfiles(REPO)


def test_a_service_dockerfile_is_an_extra_one(tmp_path: Path) -> None:
    (tmp_path / "services/orders").mkdir(parents=True)
    (tmp_path / "services/orders/Dockerfile").write_text("FROM scratch\n")
    assert checks.extra_dockerfiles(tmp_path) == ["services/orders/Dockerfile"]


# ---- command line -------------------------------------------------------------------------------


def test_the_command_line_exits_1_with_the_problems_and_2_on_misuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(rendering()))
    assert checks.main(["k8s-references", str(rendered)]) == 0
    assert "references and invariants hold" in capsys.readouterr().out
    docs = rendering()
    find(docs, "Service", "orders")["spec"]["selector"] = {"nothing": "here"}
    rendered.write_text(yaml.safe_dump_all(docs))
    assert checks.main(["k8s-references", str(rendered)]) == 1
    assert "Service/orders: selects no pod" in capsys.readouterr().out
    assert checks.main(["nonsense", "x"]) == 2
    assert "usage" in capsys.readouterr().err
