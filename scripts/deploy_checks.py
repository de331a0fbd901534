"""The checks of deploy/check.sh that no off-the-shelf tool does: references and invariants.

Schema validators and linters (kubernetes-validate, checkov, hadolint, check-jsonschema) see one
object or one file at a time. What they cannot see is checked here, on the whole rendering or
file: that a Service selects pods, that an Ingress reaches the gateway alone, that a Secret
key a Deployment reads exists, that a compose service waits only for services that can become
healthy, that a Dockerfile's base images are pinned build arguments.

Each check is a function from parsed input to a list of problems (empty: it holds), so the
tests in tests/deploy feed it small documents directly. deploy/check.sh runs the command line,
``python scripts/deploy_checks.py CHECK FILE...``, with the pinned PyYAML through ``uv tool
run`` (offline, in a network namespace): this module needs nothing but PyYAML and the standard
library. It prints the problems and exits 1, or prints a one-line summary and exits 0.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

# The gateway's pod labels: the one peer an API may take requests from (besides monitoring).
GATEWAY_LABELS = {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "gateway"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


# ---- label selectors ----------------------------------------------------------------------------


def matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics: an empty selector selects everything."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(_expression_holds(e, labels) for e in selector.get("matchExpressions", []))


def _expression_holds(expression: Obj, labels: dict[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    present, value = key in labels, labels.get(key)
    if operator == "In":
        return value in expression["values"]
    if operator == "NotIn":
        return value not in expression["values"]
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    return True


# ---- Kubernetes: the rendering of one overlay ---------------------------------------------------


@dataclass
class Pod:
    """A workload's pod template, as the other objects see it."""

    workload: Obj
    labels: dict[str, str]
    ports: dict[str, int]


@dataclass
class Rendering:
    """One overlay's objects, indexed, and the problems found in them."""

    docs: list[Obj]
    errors: set[str] = field(default_factory=set)
    external_secrets: set[str] = field(default_factory=set)
    secrets: dict[str, set[str]] = field(default_factory=dict)
    configmaps: dict[str, set[str]] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Secrets the overlay expects in the cluster (never committed) are named by the
        # `shop/external-secrets` annotation on its Namespace object.
        for ns in self.of_kind("Namespace"):
            note = ns["metadata"].get("annotations", {}).get("shop/external-secrets", "")
            self.external_secrets |= {s.strip() for s in note.split(",") if s.strip()}
        for secret in self.of_kind("Secret"):
            keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
            self.secrets[secret["metadata"]["name"]] = keys
        for configmap in self.of_kind("ConfigMap"):
            self.configmaps[configmap["metadata"]["name"]] = set(configmap.get("data", {}))

    def of_kind(self, *kinds: str) -> Iterator[Obj]:
        return (d for d in self.docs if d["kind"] in kinds)

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}

    def has(self, kind: str, name: str) -> bool:
        return name in self.names(kind)

    def error(self, obj: Obj, message: str) -> None:
        self.errors.add(f"{obj['kind']}/{obj['metadata']['name']}: {message}")

    def pods_selected_by(self, selector: Obj | None) -> list[Pod]:
        return [pod for pod in self.pods if matches(selector, pod.labels)]

    def ref(
        self, obj: Obj, kind: str, name: str, key: str | None = None, optional: bool = False
    ) -> None:
        """``obj`` reads Secret/ConfigMap ``name`` (its ``key``): it must be there."""
        pool = self.secrets if kind == "Secret" else self.configmaps
        if name in pool:
            if key is not None and key not in pool[name]:
                self.error(obj, f"{kind} {name} has no key {key}")
        elif not optional and not (kind == "Secret" and name in self.external_secrets):
            self.error(
                obj, f"refers to {kind} {name}, which is neither rendered nor declared external"
            )


def check_workload(r: Rendering, w: Obj) -> Pod:
    """Selector, service account, hardening, resources, probes and references of one workload."""
    template = w["spec"]["template"]
    spec, labels = template["spec"], template["metadata"].get("labels", {})
    if w["kind"] != "Job" and not matches(w["spec"].get("selector"), labels):
        r.error(w, "selector does not match its own pod template")
    account = spec.get("serviceAccountName")
    if not account or not r.has("ServiceAccount", account):
        r.error(w, f"service account {account!r} is not rendered")
    if spec.get("automountServiceAccountToken") is not False:
        r.error(w, "mounts a service account token")
    ours = (
        labels.get("app.kubernetes.io/part-of") == "shop"
        and "app.kubernetes.io/component" in labels
    )
    if ours and spec.get("enableServiceLinks") is not False:
        r.error(
            w,
            "service links on: Kubernetes would inject <SERVICE>_PORT=tcp://...,"
            " clashing with settings",
        )
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            r.ref(
                w,
                "Secret",
                volume["secret"]["secretName"],
                optional=volume["secret"].get("optional", False),
            )
        if "configMap" in volume:
            source = volume["configMap"]
            r.ref(w, "ConfigMap", source["name"], optional=source.get("optional", False))
    containers = spec.get("initContainers", []) + spec["containers"]
    ports = {
        p["name"]: p["containerPort"] for c in containers for p in c.get("ports", []) if "name" in p
    }
    for container in containers:
        check_container(r, w, spec.get("securityContext", {}), container, ports)
    return Pod(w, labels, ports)


def check_container(r: Rendering, w: Obj, pod_context: Obj, c: Obj, ports: dict[str, int]) -> None:
    where = f"container {c['name']}: "
    context = c.get("securityContext", {})
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        r.error(w, where + "runAsNonRoot is not true")
    if context.get("readOnlyRootFilesystem") is not True:
        r.error(w, where + "root file system is writable")
    if context.get("allowPrivilegeEscalation") is not False:
        r.error(w, where + "allowPrivilegeEscalation is not false")
    if "ALL" not in context.get("capabilities", {}).get("drop", []):
        r.error(w, where + "does not drop ALL capabilities")
    if (
        context.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
        != "RuntimeDefault"
    ):
        r.error(w, where + "seccomp profile is not RuntimeDefault")
    resources = c.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(kind, {}):
                r.error(w, where + f"no {resource} {kind[:-1]}")
    for probe in PROBES:
        if w["kind"] != "Job" and probe not in c:
            r.error(w, where + f"no {probe}")
        for how in ("httpGet", "tcpSocket"):
            port = c.get(probe, {}).get(how, {}).get("port")
            if isinstance(port, str) and port not in ports:
                r.error(w, where + f"{probe} uses unknown port {port}")
    for source in c.get("envFrom", []):
        if "secretRef" in source:
            r.ref(
                w,
                "Secret",
                source["secretRef"]["name"],
                optional=source["secretRef"].get("optional", False),
            )
        if "configMapRef" in source:
            ref = source["configMapRef"]
            r.ref(w, "ConfigMap", ref["name"], optional=ref.get("optional", False))
    for variable in c.get("env", []):
        value_from = variable.get("valueFrom", {})
        for kind, key_ref in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key_ref in value_from:
                ref = value_from[key_ref]
                r.ref(w, kind, ref["name"], ref["key"], ref.get("optional", False))


def ingress_paths(r: Rendering) -> Iterator[tuple[Obj, Obj]]:
    for ingress in r.of_kind("Ingress"):
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                yield ingress, path


def check_services_and_ingress(r: Rendering) -> None:
    """Every Service selects pods that have its target ports; every Ingress path reaches a
    Service's port."""
    service_ports: dict[str, set[Any]] = {}
    for service in r.of_kind("Service"):
        hit = r.pods_selected_by({"matchLabels": service["spec"].get("selector", {})})
        if not hit:
            r.error(service, "selects no pod")
        declared = service["spec"]["ports"]
        service_ports[service["metadata"]["name"]] = {p.get("name") for p in declared} | {
            p["port"] for p in declared
        }
        for port in declared:
            target = port.get("targetPort")
            if isinstance(target, str) and not all(target in pod.ports for pod in hit):
                r.error(service, f"target port {target} is not a named port of every selected pod")
    for ingress, path in ingress_paths(r):
        backend = path["backend"]["service"]
        port = backend["port"].get("name", backend["port"].get("number"))
        if backend["name"] not in service_ports:
            r.error(ingress, f"path {path['path']} goes to missing Service {backend['name']}")
        elif port not in service_ports[backend["name"]]:
            r.error(
                ingress,
                f"path {path['path']} goes to missing port {port} of Service {backend['name']}",
            )


def check_gateway_is_the_front_door(r: Rendering) -> None:
    """The Ingress routes to the gateway alone; an API takes requests only from the gateway's pods
    (or the monitoring namespace's scraper), never from the ingress controller or anyone else."""
    for ingress, path in ingress_paths(r):
        target = path["backend"]["service"]["name"]
        if target != "gateway":
            r.error(ingress, f"path {path['path']} goes to {target}, not the gateway")
    api_labels = [
        pod.labels for pod in r.pods if pod.labels.get("app.kubernetes.io/component") == "api"
    ]
    for policy in r.of_kind("NetworkPolicy"):
        if "Ingress" not in policy["spec"].get("policyTypes", []):
            continue
        if not any(matches(policy["spec"]["podSelector"], labels) for labels in api_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if not peers:
                r.error(policy, "lets anyone reach an API (an ingress rule without `from`)")
            for peer in peers or []:
                if not _peer_allowed_to_reach_an_api(peer):
                    r.error(
                        policy,
                        f"lets {json.dumps(peer, sort_keys=True)} reach an API;"
                        " only the gateway may",
                    )


def _peer_allowed_to_reach_an_api(peer: Obj) -> bool:
    namespace = (
        peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
    )
    if "podSelector" in peer and "namespaceSelector" not in peer:
        return matches(peer["podSelector"], GATEWAY_LABELS)
    return namespace == "monitoring" and "podSelector" not in peer


def check_scaling_and_disruption(r: Rendering) -> None:
    """HPA targets exist; an API is scaled by an HPA alone; every Deployment has a PDB and every
    long-running workload a NetworkPolicy governing its ingress; PDBs and policies select pods."""
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if not r.has(target["kind"], target["name"]):
            r.error(hpa, f"scales missing {target['kind']} {target['name']}")
    hpa_targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in r.of_kind("HorizontalPodAutoscaler")
    }
    pdbs = list(r.of_kind("PodDisruptionBudget"))
    ingress_policies = [
        n for n in r.of_kind("NetworkPolicy") if "Ingress" in n["spec"].get("policyTypes", [])
    ]
    for pod in r.pods:
        w, labels = pod.workload, pod.labels
        if w["kind"] == "Deployment" and labels.get("app.kubernetes.io/component") == "api":
            if w["metadata"]["name"] not in hpa_targets:
                r.error(w, "API without a HorizontalPodAutoscaler")
            if "replicas" in w["spec"]:
                r.error(w, "sets replicas although an HPA owns the count")
        if w["kind"] == "Deployment" and not any(
            matches(p["spec"]["selector"], labels) for p in pdbs
        ):
            r.error(w, "no PodDisruptionBudget selects its pods")
        if w["kind"] != "Job" and not any(
            matches(n["spec"]["podSelector"], labels) for n in ingress_policies
        ):
            r.error(w, "no NetworkPolicy governs its ingress")
    for pdb in pdbs:
        if not r.pods_selected_by(pdb["spec"]["selector"]):
            r.error(pdb, "selects no pod")
    for policy in r.of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        if selector and not r.pods_selected_by(selector):
            r.error(policy, "selects no pod")


def k8s_references(docs: Iterable[Obj | None]) -> tuple[list[str], str]:
    """Problems in one overlay's rendering (sorted), and a summary of what was checked."""
    r = Rendering([d for d in docs if d])
    for workload in r.of_kind("Deployment", "StatefulSet", "Job"):
        r.pods.append(check_workload(r, workload))
    check_services_and_ingress(r)
    check_gateway_is_the_front_door(r)
    check_scaling_and_disruption(r)
    summary = f"{len(r.docs)} objects, {len(r.pods)} workloads: references and invariants hold"
    return sorted(r.errors), summary


# ---- compose ------------------------------------------------------------------------------------

# An image may be a variable with a pinned default, `${POSTGRES_IMAGE:-postgres:17.6-bookworm}`.
IMAGE_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def compose_references(doc: Obj, compose_dir: Path) -> tuple[list[str], str]:
    """Dependencies, pinned images, hardening of built services and declared volumes."""
    services, volumes = doc.get("services", {}), doc.get("volumes") or {}
    errors: list[str] = []
    for name, service in services.items():
        errors += [
            f"{name}: {e}" for e in _compose_service(service, services, volumes, compose_dir)
        ]
    return errors, f"{len(services)} services: dependencies, images, hardening and volumes hold"


def _compose_service(service: Obj, services: Obj, volumes: Obj, compose_dir: Path) -> Iterator[str]:
    yield from _compose_dependencies(service, services)
    yield from _compose_image(service.get("image", ""))
    if "build" in service:
        yield from _compose_build(service, compose_dir)
    for volume in service.get("volumes", []):
        source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
        if source and not re.match(r"^[./~$]", source) and source not in volumes:
            yield f"uses undeclared volume {source}"


def _compose_dependencies(service: Obj, services: Obj) -> Iterator[str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        deps = {d: {"condition": "service_started"} for d in deps}
    for dep, spec in deps.items():
        target = services.get(dep)
        if target is None:
            yield f"depends on undefined service {dep}"
            continue
        condition = spec.get("condition", "service_started")
        healthcheck = target.get("healthcheck")
        if condition == "service_healthy" and (not healthcheck or healthcheck.get("disable")):
            yield f"waits for {dep} to be healthy, but {dep} has no healthcheck"
        if condition == "service_completed_successfully" and target.get("restart", "no") != "no":
            yield f"waits for one-shot {dep}, whose restart policy would rerun it forever"


def _compose_image(image: str) -> Iterator[str]:
    variable = IMAGE_VARIABLE.fullmatch(image)
    if variable:
        if not variable.group(2):
            yield f"image {image!r} has no pinned default"
        image = variable.group(2) or ""
    if image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        yield f"image {image!r} is not pinned to a tag"


def _compose_build(service: Obj, compose_dir: Path) -> Iterator[str]:
    build = service["build"]
    context = Path(os.path.normpath(compose_dir / build.get("context", ".")))
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    if not dockerfile.is_file():
        yield f"no Dockerfile at {os.path.relpath(dockerfile)}"
    if service.get("read_only") is not True:
        yield "root file system is writable (read_only: true)"
    if "ALL" not in service.get("cap_drop", []):
        yield "does not drop ALL capabilities"
    if "no-new-privileges:true" not in service.get("security_opt", []):
        yield "no-new-privileges is not set"
    if "user" in service and str(service["user"]).split(":")[0] in ("0", "root"):
        yield "runs as root"


# An override file (deploy/compose.pooled.yaml) is checked as compose runs it: merged onto the base.
# Compose's merge, as far as these checks need it (the compose specification's "Merge" rules):
# mappings merge key by key, sequences append what is new, `command`, `entrypoint` and a
# healthcheck's `test` are replaced; `environment` and `depends_on` may be lists or mappings;
# the YAML tags `!reset` (drop the base's value) and `!override` (replace it) are honoured.


class _Reset:
    """A `!reset` value: the key disappears from the merged model."""

    def __repr__(self) -> str:
        return "!reset"


RESET = _Reset()


@dataclass
class _Override:
    """An `!override` value: replaces the base's, whatever its type."""

    value: Any


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus compose's merge tags."""


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    return _Override(loader.construct_scalar(node))  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)
ComposeLoader.add_constructor("!override", _construct_override)

_REPLACED = {"command", "entrypoint", "test"}  # shell commands: the last file's value wins


def _normalised(key: str | None, value: Any) -> Any:
    """`environment: [K=V]` and `depends_on: [name]`, as the mappings they stand for."""
    if key == "environment" and isinstance(value, list):
        pairs = (str(item).partition("=") for item in value)
        return {k: (v if sep else None) for k, sep, v in pairs}
    if key == "depends_on" and isinstance(value, list):
        return {name: {"condition": "service_started"} for name in value}
    return value


def _resolved(value: Any) -> Any:
    """A value with its merge tags applied to nothing (a key new in the override)."""
    if isinstance(value, _Override):
        return _resolved(value.value)
    if isinstance(value, dict):
        return {k: _resolved(v) for k, v in value.items() if v is not RESET}
    if isinstance(value, list):
        return [_resolved(v) for v in value if v is not RESET]
    return value


def merge_compose(base: Any, override: Any, key: str | None = None) -> Any:
    """``override`` merged onto ``base`` as compose merges two files (the rules above)."""
    if isinstance(override, _Override):
        return _resolved(override.value)
    base, override = _normalised(key, base), _normalised(key, override)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            if v is RESET:
                merged.pop(k, None)
            elif k in merged:
                merged[k] = merge_compose(merged[k], v, k)
            else:
                merged[k] = _resolved(v)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED:
        return base + [_resolved(v) for v in override if v is not RESET and v not in base]
    return _resolved(override)


def load_compose(paths: Iterable[Path]) -> Obj:
    """The application model of compose files given in order (base first, then overrides)."""
    merged: Obj = {}
    for path in paths:
        with path.open() as stream:
            merged = merge_compose(merged, yaml.load(stream, Loader=ComposeLoader))  # noqa: S506 - a SafeLoader
    return merged


# ---- Dockerfile ---------------------------------------------------------------------------------

BUILD_ARGUMENT = re.compile(r"^\$\{?([A-Za-z_]+)\}?$")


def dockerfile_base_images(text: str, name: str) -> list[str]:
    """Base images are build arguments (a machine without a registry builds on local stand-ins),
    so hadolint's and checkov's tag checks cannot see them. Every FROM names an earlier stage or
    an ARG declared before the first FROM; every such default has a tag, not `latest`; the final
    (runtime) stage's base is pinned by digest too; no `# syntax=` line (it pulls an image)."""
    lines = text.splitlines()
    errors = []
    if lines and re.match(r"^# *syntax *=", lines[0]):
        errors.append(f"{name}: `# syntax=` needs a registry to resolve; use the built-in frontend")
    pins: dict[str, str] = {}
    stages: set[str] = set()
    last, seen_from = "", False
    for line in lines:
        words = line.split()
        if line.startswith("ARG ") and not seen_from and "=" in words[1]:
            key, value = words[1].split("=", 1)
            if value:
                pins[key] = value
        if not line.startswith("FROM "):
            continue
        seen_from, last = True, words[1]
        if len(words) >= 4 and words[2].upper() == "AS":
            stages.add(words[3])
        if last in stages:
            continue
        resolved = _resolve_base(last, pins)
        if resolved is None:
            errors.append(
                f"{name}: FROM {last} has no ARG {_argument(last)}=<pinned image>"
                " before the first FROM"
            )
            continue
        tag = resolved.split("@", 1)[0]
        if not re.search(r":[^/]+$", tag) or tag.endswith(":latest"):
            errors.append(f"{name}: base image {resolved} is not pinned to a release tag")
    runtime = _resolve_base(last, pins) or ""
    if last and last not in stages and not re.search(r"@sha256:[0-9a-f]{64}$", runtime):
        errors.append(f"{name}: the runtime base {runtime} is not pinned by digest")
    return errors


def _argument(image: str) -> str:
    match = BUILD_ARGUMENT.match(image)
    return match.group(1) if match else image


def _resolve_base(image: str, pins: dict[str, str]) -> str | None:
    """The image a FROM names: itself, or its build argument's default (None: no default)."""
    if not BUILD_ARGUMENT.match(image):
        return image
    return pins.get(_argument(image))


def dockerfile_copies_workspace(text: str, name: str, members: Iterable[str]) -> list[str]:
    """uv reads the whole workspace even to install one member: the dependency layer must copy
    the root's pyproject.toml and uv.lock, and the pyproject.toml of every workspace member."""
    lines = set(text.splitlines())
    wanted = ["COPY pyproject.toml uv.lock ./"] + [f"COPY {m}/pyproject.toml {m}/" for m in members]
    return [f"{name}: does not {line}" for line in wanted if line not in lines]


def workspace_members(root: Path) -> list[str]:
    """The workspace members' directories, relative to ``root`` (libs/*, services/*)."""
    manifests = [*root.glob("libs/*/pyproject.toml"), *root.glob("services/*/pyproject.toml")]
    return sorted(str(m.parent.relative_to(root)) for m in manifests)


def extra_dockerfiles(root: Path) -> list[str]:
    """Dockerfiles besides deploy/Dockerfile: one Dockerfile serves every service, and a
    per-service copy would drift from it unseen."""
    found = [*root.glob("libs/**/Dockerfile"), *root.glob("services/**/Dockerfile")]
    return sorted(str(p.relative_to(root)) for p in found if ".venv" not in p.parts)


# ---- command line -------------------------------------------------------------------------------


def _load_all(path: Path) -> list[Obj | None]:
    with path.open() as stream:
        return list(yaml.safe_load_all(stream))


def _run_k8s_references(args: list[str]) -> tuple[list[str], str]:
    return k8s_references(_load_all(Path(args[0])))


def _run_compose_references(args: list[str]) -> tuple[list[str], str]:
    paths = [Path(a) for a in args]
    return compose_references(load_compose(paths), paths[0].parent)


def _run_compose_merge(args: list[str]) -> tuple[list[str], str]:
    """The merged model, as plain YAML for the schema check (which knows no merge tags)."""
    out, files = Path(args[0]), [Path(a) for a in args[1:]]
    if not files:
        return ["compose-merge needs OUT and at least one compose file"], ""
    out.write_text(yaml.safe_dump(load_compose(files), sort_keys=False))
    return [], f"{len(files)} compose files merged into {out}"


def _run_dockerfile_pins(args: list[str]) -> tuple[list[str], str]:
    root, files = Path(args[0]), [Path(a) for a in args[1:]]
    errors = [e for f in files for e in dockerfile_base_images(f.read_text(), _shown(f, root))]
    return errors, f"{len(files)} Dockerfile(s): base images are pinned build arguments"


def _run_dockerfile_workspace(args: list[str]) -> tuple[list[str], str]:
    root, files = Path(args[0]), [Path(a) for a in args[1:]]
    members = workspace_members(root)
    errors = [
        e
        for f in files
        for e in dockerfile_copies_workspace(f.read_text(), _shown(f, root), members)
    ]
    return errors, f"{len(files)} Dockerfile(s) copy the manifests of {len(members)} members"


def _run_only_one_dockerfile(args: list[str]) -> tuple[list[str], str]:
    others = extra_dockerfiles(Path(args[0]))
    errors = [
        f"{o}: a Dockerfile besides deploy/Dockerfile (build that with --build-arg SERVICE=...)"
        for o in others
    ]
    return errors, "deploy/Dockerfile is the only Dockerfile"


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


COMMANDS: dict[str, tuple[Callable[[list[str]], tuple[list[str], str]], str]] = {
    "k8s-references": (_run_k8s_references, "RENDERED.yaml"),
    "compose-references": (_run_compose_references, "compose.yaml [OVERRIDE.yaml...]"),
    "compose-merge": (_run_compose_merge, "OUT.yaml compose.yaml OVERRIDE.yaml..."),
    "dockerfile-pins": (_run_dockerfile_pins, "ROOT DOCKERFILE..."),
    "dockerfile-workspace": (_run_dockerfile_workspace, "ROOT DOCKERFILE..."),
    "only-one-dockerfile": (_run_only_one_dockerfile, "ROOT"),
}


def main(argv: list[str]) -> int:
    """Run one check; print its problems (exit 1) or its summary (exit 0); 2 on a usage error."""
    if len(argv) < 2 or argv[0] not in COMMANDS:
        usage = "\n".join(
            f"  deploy_checks.py {name} {args}" for name, (_, args) in COMMANDS.items()
        )
        print(f"usage:\n{usage}", file=sys.stderr)
        return 2
    errors, summary = COMMANDS[argv[0]][0](argv[1:])
    print("\n".join(errors) if errors else summary)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
