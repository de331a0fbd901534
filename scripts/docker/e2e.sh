#!/usr/bin/env bash
# `make docker-e2e`: Docker mode proven on a real engine.
#
#   1. a Docker engine and compose v2 (scripts/docker/engine.sh: installs and starts them as root)
#   2. `make up` in Docker mode with deploy/compose.e2e.yaml added (scripts/stack.sh): base images
#      pinned or stand-ins (scripts/docker/standins.sh), the three images built, the compose stack
#      up on 127.0.0.1:8001-8003 (workers 9001-9003), migrations first
#   3. tests/e2e against it; its fault drills kill, stop and start containers through
#      scripts/stack.sh, which acts on the recorded compose stack; then the invariants
#   4. the stack down with its volumes, and the engine stopped if step 1 started it; KEEP_UP=1
#      leaves both up (`make down` then stops the stack)
#
# It runs as the `dev` stack (the ports `make up` uses): a dev stack already up in local mode is
# refused rather than disturbed. Cached stand-ins and build layers make a second run fast.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
started=$SECONDS
say() { printf '\033[1m==> %s (t=%ss)\033[0m\n' "$*" "$((SECONDS - started))"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

recorded=$(cat .run/dev/mode 2>/dev/null || true)
if [[ $recorded == local ]]; then
  die "a local dev stack is recorded as up (.run/dev/mode); 'make down' first: docker-e2e uses its ports"
fi

engine_was_up=1
timeout 10 docker info >/dev/null 2>&1 || engine_was_up=0
bash scripts/docker/engine.sh

finish() {
  local status=$?
  if [[ -n ${KEEP_UP:-} ]]; then
    say "KEEP_UP=1: the compose stack stays up ('make down' stops it)"
  else
    VOLUMES=1 STACK=dev MODE=docker scripts/stack.sh down || status=1
    ((engine_was_up)) || bash scripts/docker/engine.sh stop
  fi
  say "docker-e2e $( ((status == 0)) && echo passed || echo FAILED)"
  exit "$status"
}
trap finish EXIT
trap "exit 143" TERM INT  # so that `timeout` still brings the stack down

export STACK=dev MODE=docker COMPOSE_FILE=$ROOT/deploy/compose.yaml:$ROOT/deploy/compose.e2e.yaml
say "Bringing the compose stack up"
scripts/stack.sh up
say "tests/e2e against the compose stack"
# The drills call scripts/stack.sh, which finds the recorded docker stack. Ports: conftest.py's
# defaults (8001-8003, 9001-9003) are the compose stack's.
unset MODE
uv run --frozen pytest tests/e2e -p no:cacheprovider
say "Invariants"
scripts/stack.sh check-invariants
