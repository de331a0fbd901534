#!/usr/bin/env bash
# The base images the stack builds on: the pinned ones when the engine has them or can pull them,
# otherwise local stand-ins built from Debian packages (no registry needed).
#
#   scripts/docker/standins.sh ENV_FILE
#
# Pinned references are read from where they are pinned: UV_IMAGE and PYTHON_IMAGE from the
# ARG defaults in deploy/Dockerfile, POSTGRES_IMAGE and REDIS_IMAGE from the defaults in
# deploy/compose.yaml. For each, ENV_FILE gets `NAME=<reference to use>`; compose and the builds
# read them from the environment. A stand-in is built once and reused while its inputs (this
# script and scripts/docker/standin/) are unchanged: a later run costs a few `docker image
# inspect`s.
#
# Stand-ins (Debian bookworm, --variant=minbase, `docker import`ed):
#   shop-standin/python   python3.11 from Debian, linked as /usr/local/bin/python3.11 as in the
#                         official image; trusts the host's CA bundle (builds reach the index)
#   shop-standin/uv       the uv binary alone at /uv, from PyPI's uv wheel (scripts/tools.py)
#   shop-standin/postgres postgresql-15 from Debian; entry point honours POSTGRES_* (standin/)
#   shop-standin/redis    redis-server from Debian; entry point as the official image's
#
# Environment: PULL_TIMEOUT (seconds per pull attempt, default 20), STANDINS=always (skip the
# pulls), DEBIAN_SOURCES (an apt .sources/.list file or mirror URL; default: the host's).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ENV_FILE=${1:?usage: standins.sh ENV_FILE}
SUITE=bookworm
WORK=$ROOT/.run/docker/standins
CACHE=$WORK/apt-archives  # downloaded .debs, kept: a rebuild downloads nothing again
INPUTS=$(cat "$0" scripts/docker/standin/* | sha256sum | cut -c1-16)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pinned_arg() { sed -n "s/^ARG $1=//p" deploy/Dockerfile | head -1; }
pinned_compose() { sed -n "s/.*\${$1:-\([^}]*\)}.*/\1/p" deploy/compose.yaml | head -1; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

# usable REFERENCE: the engine has it, or pulls it within PULL_TIMEOUT.
usable() {
  have "$1" && return 0
  [[ ${STANDINS:-} == always ]] && return 1
  timeout "${PULL_TIMEOUT:-20}" docker pull --quiet "$1" >/dev/null 2>&1
}

fresh() {  # fresh TAG: the stand-in exists and was built from the current inputs
  [[ $(docker image inspect --format '{{index .Config.Labels "shop.standin.inputs"}}' "$1" 2>/dev/null) == "$INPUTS" ]]
}

debian_sources() {
  if [[ -n ${DEBIAN_SOURCES:-} ]]; then echo "$DEBIAN_SOURCES"
  elif grep -qs "$SUITE" /etc/apt/sources.list.d/debian.sources; then echo /etc/apt/sources.list.d/debian.sources
  else echo "http://deb.debian.org/debian"; fi
}

ensure_mmdebstrap() {
  command -v mmdebstrap >/dev/null && return 0
  [[ $(id -u) == 0 ]] || die "mmdebstrap is needed to build stand-in base images (apt-get install mmdebstrap)"
  say "Installing mmdebstrap (Debian) to build stand-in base images"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
}

# rootfs TAG PACKAGES HOOK... -- IMPORT_CHANGE...: a minbase Debian with PACKAGES, imported as TAG.
rootfs() {
  local tag=$1 packages=$2; shift 2
  local -a hooks=() changes=()
  while (($#)) && [[ $1 != -- ]]; do hooks+=(--customize-hook="$1"); shift; done
  shift
  for change in "$@"; do changes+=(--change "$change"); done
  say "Building stand-in $tag from Debian $SUITE ($packages)"
  # Its own session: mmdebstrap signals its process group on exit, which would end our caller.
  setsid --wait mmdebstrap --quiet --variant=minbase --format=tar --include="$packages" \
    --dpkgopt=force-unsafe-io --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --skip=download/empty --setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
    --setup-hook="sync-in $CACHE /var/cache/apt/archives" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb' \
    "${hooks[@]}" "$SUITE" - "$(debian_sources)" \
    | docker import "${changes[@]}" --change "LABEL shop.standin.inputs=$INPUTS" \
        --change "LABEL shop.standin.from=debian-$SUITE" - "$tag" >/dev/null
}

build_python() {
  rootfs "$1" python3.11,ca-certificates \
    'ln -s /usr/bin/python3.11 "$1"/usr/local/bin/python3.11' \
    'ln -s /usr/bin/python3.11 "$1"/usr/local/bin/python3' \
    'ln -s /usr/bin/python3.11 "$1"/usr/local/bin/python' \
    "upload /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt" \
    -- 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    'ENV LANG=C.UTF-8' 'CMD ["python3"]'
}

build_postgres() {
  rootfs "$1" postgresql-15 \
    'rm -rf "$1"/etc/postgresql/15 "$1"/var/lib/postgresql/15' \
    "copy-in scripts/docker/standin/postgres-entrypoint.sh /usr/local/bin" \
    -- 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV LANG=C.UTF-8' 'ENV PGDATA=/var/lib/postgresql/data' 'VOLUME /var/lib/postgresql/data' \
    'EXPOSE 5432' \
    'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' 'CMD ["postgres"]'
}

build_redis() {
  rootfs "$1" redis-server \
    'mkdir -p "$1"/data' \
    "copy-in scripts/docker/standin/redis-entrypoint.sh /usr/local/bin" \
    -- 'WORKDIR /data' 'VOLUME /data' 'EXPOSE 6379' \
    'ENTRYPOINT ["/usr/local/bin/redis-entrypoint.sh"]' 'CMD ["redis-server"]'
}

build_uv() {
  mkdir -p "$WORK/uv"
  python3 scripts/tools.py uv --dest "$WORK/uv"
  say "Building stand-in $1 (the uv binary alone, as the official image)"
  tar -C "$WORK/uv" -c uv \
    | docker import --change "LABEL shop.standin.inputs=$INPUTS" --change 'CMD ["/uv"]' - "$1" >/dev/null
}

# choose NAME PINNED STANDIN_TAG BUILDER: the pinned image, else a stand-in (built below if stale).
QUEUED=()
choose() {
  local name=$1 pinned=$2 standin=$3 builder=$4
  [[ -n $pinned ]] || die "no pinned default found for $name"
  if usable "$pinned"; then
    echo "$name=$pinned" >>"$ENV_FILE.partial"
    return 0
  fi
  say "$name: $pinned cannot be pulled here; using stand-in $standin"
  fresh "$standin" || QUEUED+=("$builder:$standin")
  echo "$name=$standin" >>"$ENV_FILE.partial"
}

# The stale stand-ins, built side by side (each mostly waits on downloads and dpkg).
build_queued() {
  local job builder tag pids=() failed=0 i
  for job in "${QUEUED[@]}"; do
    builder=${job%%:*} tag=${job#*:}
    "$builder" "$tag" >"$WORK/${builder#build_}.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    job=${QUEUED[i]} builder=${job%%:*}
    if wait "${pids[i]}"; then
      say "Built stand-in ${job#*:}"
    else
      failed=1
      echo "error: building stand-in ${job#*:} failed:" >&2
      sed 's/^/  | /' "$WORK/${builder#build_}.log" >&2
    fi
  done
  ((failed == 0))
}

mkdir -p "$WORK" "$CACHE" "$(dirname "$ENV_FILE")"
: >"$ENV_FILE.partial"
python_pin=$(pinned_arg PYTHON_IMAGE)
python_minor=$(sed -E 's/^python:([0-9]+\.[0-9]+).*/\1/' <<<"$python_pin")
[[ $python_minor == 3.11 ]] || die "the stand-in is Debian $SUITE's Python 3.11, but the pin is $python_pin"
uv_pin=$(pinned_arg UV_IMAGE)
choose UV_IMAGE "$uv_pin" "shop-standin/uv:${uv_pin##*:}" build_uv
choose PYTHON_IMAGE "$python_pin" shop-standin/python:3.11-$SUITE build_python
choose POSTGRES_IMAGE "$(pinned_compose POSTGRES_IMAGE)" shop-standin/postgres:15-$SUITE build_postgres
choose REDIS_IMAGE "$(pinned_compose REDIS_IMAGE)" shop-standin/redis:7.0-$SUITE build_redis
if ((${#QUEUED[@]})); then
  ensure_mmdebstrap
  build_queued || exit 1
fi
mv "$ENV_FILE.partial" "$ENV_FILE"
