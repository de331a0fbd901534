#!/usr/bin/env bash
# The stack's verbs (`make up|down|ps|logs|migrate|kill|start` all land here).
#
# Two modes: Docker Compose (deploy/compose.yaml) when a Docker engine and its compose v2 plugin
# answer, otherwise local processes under supervisord against Postgres and Redis on localhost.
# `up` records the mode it started in $RUN_DIR/mode (docker mode also its compose settings), and
# every other verb acts on that recorded stack, whatever has appeared on the machine since;
# `down` removes the record. MODE=local or MODE=docker overrides both. STACK=e2e is the separate
# local stack `make test` brings up and down (other ports, database and Redis DB), so it never
# disturbs a stack started by `make up`; STACK=soak is the same for `make soak`, STACK=bench
# for `bench/run.sh`.
# Docker mode: COMPOSE_FILE (colon-separated, default deploy/compose.yaml) adds override files
# (`make docker-e2e` adds deploy/compose.e2e.yaml); VOLUMES=1 makes `down` drop the volumes.
#
# AUTOSTART=false (local mode): `up` migrates and configures the processes but starts none;
# `start NAME` starts them one at a time (make upgrade-drill replaces a release's that way).
# REPLICAS=n (local mode, default 1): n of every process. The n APIs of a service share its
# port (SO_REUSEPORT: the kernel spreads connections over them, one entry point per service);
# worker slot k > 1 is `<service>-worker-k`, with its own /healthz port (+10 per slot) and a
# stable consumer name, `<service>-worker-k`, so a restarted slot re-reads its own pending
# entries. REDIS_CLUSTER_NODES and DATABASE_REPLICA_URL, when set, go to every service.
# Past one replica, the services reach Postgres through PgBouncer (transaction pooling, run by
# the same supervisord on PGBOUNCER_PORT, default PORT_BASE+64; scripts/pgbouncer.py builds it
# once): n replicas' pools then share a fixed number of server connections. Their own
# DATABASE_DIRECT_URL is Postgres itself, for migrations and partition maintenance.
# POOLER=none runs them without it, POOLER=pgbouncer with it at one replica too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STACK=${STACK:-dev}
if [[ $STACK == e2e || $STACK == soak ]]; then
  # `make test` and `make soak` (each on its own Postgres and Redis, see scripts/infra.py).
  PORT_BASE=${PORT_BASE:-18000} WORKER_PORT_BASE=${WORKER_PORT_BASE:-19000}
  DB_NAME=${DB_NAME:-app_$STACK} REDIS_DB=${REDIS_DB:-14}
  # The suite signs up many users from one address (rate limits have their own tests), and
  # its deadline drills should not wait the production 30 to 60 s at every step.
  for prefix in USERS ORDERS NOTIFICATIONS; do
    export "${prefix}_RATE_LIMIT_AUTH=100000/minute" "${prefix}_RATE_LIMIT_READ=100000/minute"
    export "${prefix}_RATE_LIMIT_WRITE=100000/minute"
  done
  # Deadlines short enough that drills settle in seconds: a lost command is re-sent after
  # 4 s, then 6 s, then 9 s, and only then is the order rejected; releases and
  # announcements are re-sent every 5 s (growing) until answered.
  export ORDERS_SAGA_CREDIT_TIMEOUT_SECONDS=${ORDERS_SAGA_CREDIT_TIMEOUT_SECONDS:-4}
  export ORDERS_SAGA_MAX_RESENDS=${ORDERS_SAGA_MAX_RESENDS:-2}
  export ORDERS_SAGA_RESEND_BACKOFF=${ORDERS_SAGA_RESEND_BACKOFF:-1.5}
  export ORDERS_SAGA_RELEASE_TIMEOUT_SECONDS=${ORDERS_SAGA_RELEASE_TIMEOUT_SECONDS:-5}
  export ORDERS_SAGA_NOTIFICATION_TIMEOUT_SECONDS=${ORDERS_SAGA_NOTIFICATION_TIMEOUT_SECONDS:-5}
  export USERS_WELCOME_TIMEOUT_SECONDS=${USERS_WELCOME_TIMEOUT_SECONDS:-5}
  export USERS_WELCOME_TIMER_INTERVAL_SECONDS=${USERS_WELCOME_TIMER_INTERVAL_SECONDS:-1}
  export NOTIFICATIONS_WEBHOOK_ALLOW_PRIVATE_TARGETS=true  # tests/e2e's webhook receivers: 127.0.0.1
elif [[ $STACK == bench ]]; then
  # `bench/run.sh`: production settings except rate limits raised out of the way (still
  # checked, so their Redis round trip is measured) and logging at WARNING (one access-log
  # line per request would otherwise be a large share of what is measured).
  PORT_BASE=${PORT_BASE:-28000} WORKER_PORT_BASE=${WORKER_PORT_BASE:-29000}
  DB_NAME=${DB_NAME:-app_bench} REDIS_DB=${REDIS_DB:-13}
  for prefix in USERS ORDERS NOTIFICATIONS; do
    export "${prefix}_RATE_LIMIT_AUTH=1000000/minute" "${prefix}_RATE_LIMIT_READ=1000000/minute"
    export "${prefix}_RATE_LIMIT_WRITE=1000000/minute" "${prefix}_LOG_LEVEL=WARNING"
  done
  export GATEWAY_LOG_LEVEL=WARNING
else
  PORT_BASE=${PORT_BASE:-8000} WORKER_PORT_BASE=${WORKER_PORT_BASE:-9000}
  DB_NAME=${DB_NAME:-app} REDIS_DB=${REDIS_DB:-0}
  # A developer's stack: every client is 127.0.0.1, so per-address limits would throttle a
  # test suite run against it. Ten times the production defaults; any of them can be set.
  for prefix in USERS ORDERS NOTIFICATIONS; do
    for group_limit in AUTH=300/minute READ=12000/minute WRITE=3000/minute; do
      variable="${prefix}_RATE_LIMIT_${group_limit%%=*}"
      export "$variable=${!variable:-${group_limit#*=}}"
    done
  done
fi
PG_HOST=${PG_HOST:-127.0.0.1} PG_PORT=${PG_PORT:-5432} PG_USER=${PG_USER:-postgres}
REDIS_HOST=${REDIS_HOST:-127.0.0.1} REDIS_PORT=${REDIS_PORT:-6379}
DATABASE_URL=${DATABASE_URL:-postgresql+asyncpg://$PG_USER@$PG_HOST:$PG_PORT/$DB_NAME}
REDIS_URL=${REDIS_URL:-redis://$REDIS_HOST:$REDIS_PORT/$REDIS_DB}
RUN_DIR=${RUN_DIR:-$ROOT/.run/$STACK}
VENV=$ROOT/.venv
SERVICES=(users orders notifications)
REPLICAS=${REPLICAS:-1}
[[ $REPLICAS =~ ^[1-9]$ ]] || { echo "error: REPLICAS is 1..9, not $REPLICAS" >&2; exit 1; }
POOLER=${POOLER:-$( ((REPLICAS > 1)) && echo pgbouncer || echo none)}
[[ $POOLER == pgbouncer || $POOLER == none ]] || { echo "error: POOLER is pgbouncer or none, not $POOLER" >&2; exit 1; }
PGBOUNCER_PORT=${PGBOUNCER_PORT:-$((PORT_BASE + 64))}
# Server connections PgBouncer opens to the database, for every process of the stack: under
# the server's max_connections with room for operators, migrations and scripts.
PGBOUNCER_POOL_SIZE=${PGBOUNCER_POOL_SIZE:-30}
PROCESSES=()
for slot in $(seq 1 "$REPLICAS"); do
  suffix=""; ((slot == 1)) || suffix="-$slot"  # slot 1 keeps the plain names (make kill NAME=...)
  for process in gateway-api users-api users-worker orders-api orders-worker notifications-api notifications-worker; do
    PROCESSES+=("$process$suffix")
  done
done
MODE_FILE=$RUN_DIR/mode
COMPOSE_ENV=$RUN_DIR/compose.env  # docker mode: COMPOSE_FILE and the base images it was built on
IMAGES_ENV=$ROOT/.run/docker/images.env  # scripts/docker/standins.sh: pinned images or stand-ins
COMPOSE=(docker compose)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

mode() {
  if [[ -n ${MODE:-} ]]; then echo "$MODE"
  elif [[ -s $MODE_FILE ]]; then cat "$MODE_FILE"  # what `up` started
  elif [[ $STACK == dev ]] && compose_answers; then echo docker
  else echo local; fi
}

# A Docker engine answers and has compose v2. An engine without the plugin (Debian's docker.io
# alone) gets the local mode and a message saying so, never compose's cryptic errors.
compose_answers() {
  timeout 10 docker info >/dev/null 2>&1 || return 1
  timeout 10 docker compose version >/dev/null 2>&1 && return 0
  printf 'note: a Docker engine answers, but `docker compose` (the compose v2 plugin) does not;\n' >&2
  printf '      using local processes. Install the plugin (make docker-e2e does) for Docker mode.\n' >&2
  return 1
}

port_of() {  # port_of gateway|users|orders|notifications [api|worker]
  local index; case $1 in gateway) index=0;; users) index=1;; orders) index=2;; notifications) index=3;; esac
  if [[ ${2:-api} == worker ]]; then echo $((WORKER_PORT_BASE + index)); else echo $((PORT_BASE + index)); fi
}

export_service_env() {
  local service prefix
  for service in "${SERVICES[@]}"; do
    prefix=${service^^}
    export "${prefix}_DATABASE_URL=$DATABASE_URL" "${prefix}_REDIS_URL=$REDIS_URL"
    if [[ $POOLER == pgbouncer ]]; then
      export "${prefix}_DATABASE_URL=$(pooled_url)" "${prefix}_DATABASE_DIRECT_URL=$DATABASE_URL"
    fi
    export "${prefix}_PORT=$(port_of "$service")" "${prefix}_WORKER_PORT=$(port_of "$service" worker)"
    if [[ -n ${REDIS_CLUSTER_NODES:-} ]]; then export "${prefix}_REDIS_CLUSTER_NODES=$REDIS_CLUSTER_NODES"; fi
    if [[ -n ${DATABASE_REPLICA_URL:-} ]]; then export "${prefix}_DATABASE_REPLICA_URL=$DATABASE_REPLICA_URL"; fi
    # Every request comes through the gateway (on this machine: 127.0.0.1), whose
    # X-Forwarded-For names the client; the gateway replaces whatever a client sent there.
    local trusted="${prefix}_TRUSTED_PROXIES"
    export "$trusted=${!trusted:-127.0.0.1}"
    export "GATEWAY_${prefix}_URL=http://127.0.0.1:$(port_of "$service")"
  done
  export GATEWAY_PORT=$(port_of gateway)
}

slot_environment() {  # slot_environment PROCESS: supervisord's environment= for one slot
  local base=${1%-[2-9]} slot=1 service prefix
  [[ $1 == "$base" ]] || slot=${1##*-}
  service=${base%-*} prefix=${service^^}
  if [[ $base == *-worker ]]; then
    echo "${prefix}_CONSUMER_NAME=\"$1\",${prefix}_WORKER_PORT=\"$(($(port_of "$service" worker) + 10 * (slot - 1)))\""
  elif ((REPLICAS > 1)); then
    echo "${prefix}_REUSE_PORT=\"true\""
  fi
}

answers() { "$VENV/bin/python" -c "import socket,sys; socket.create_connection(('$1', $2), 2)" 2>/dev/null; }

ensure_backing_services() {
  if ! answers "$PG_HOST" "$PG_PORT"; then
    say "Postgres does not answer on $PG_HOST:$PG_PORT; starting the local cluster"
    command -v pg_ctlcluster >/dev/null || die "no Postgres on $PG_HOST:$PG_PORT and none installed (see README)"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  fi
  if ! answers "$REDIS_HOST" "$REDIS_PORT"; then
    say "Redis does not answer on $REDIS_HOST:$REDIS_PORT; starting a local one"
    command -v redis-server >/dev/null || die "no Redis on $REDIS_HOST:$REDIS_PORT and none installed (see README)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
  fi
  for _ in $(seq 1 60); do
    answers "$PG_HOST" "$PG_PORT" && answers "$REDIS_HOST" "$REDIS_PORT" && return 0
    sleep 0.5
  done
  die "Postgres or Redis did not come up"
}

# DATABASE_URL with PgBouncer's address instead of Postgres's (same user and database).
pooled_url() {
  local scheme=${DATABASE_URL%%://*} rest=${DATABASE_URL#*://}
  local credentials="" path=${rest#*/}
  [[ ${rest%%/*} == *@* ]] && credentials="${rest%%@*}@"
  echo "$scheme://${credentials}127.0.0.1:$PGBOUNCER_PORT/$path"
}

# PgBouncer's configuration: transaction pooling with prepared statements (the services' hot
# path runs asyncpg prepared statements); its server connections set the statement timeout
# (the services' DB_STATEMENT_TIMEOUT_MS default: a pooler refuses it as a client's startup
# parameter); trust on loopback as the local Postgres has it. Written at every `up`; logs go
# to supervisord.
write_pgbouncer_config() {
  local dsn=${DATABASE_URL#*://} user host_port
  user=${dsn%%@*}; user=${user%%:*}
  host_port=${dsn#*@}; host_port=${host_port%%/*}
  printf '"%s" ""\n' "$user" >"$RUN_DIR/pgbouncer-users.txt"
  cat >"$RUN_DIR/pgbouncer.ini" <<CONF
[databases]
$DB_NAME = host=${host_port%:*} port=${host_port##*:} dbname=$DB_NAME connect_query='SET statement_timeout = ${PGBOUNCER_STATEMENT_TIMEOUT_MS:-10000}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $RUN_DIR/pgbouncer-users.txt
pool_mode = transaction
max_prepared_statements = 200
max_client_conn = 1000
default_pool_size = $PGBOUNCER_POOL_SIZE
max_db_connections = $PGBOUNCER_POOL_SIZE
query_wait_timeout = 30
log_connections = 0
log_disconnections = 0
CONF
}

pgbouncer_program() {
  local binary user_option=""
  binary=$(python3 scripts/pgbouncer.py) || die "PgBouncer is needed past one replica (POOLER=none runs without it)"
  # PgBouncer refuses to run as root: it reads its files, then becomes Postgres's user.
  [[ $(id -u) == 0 ]] && user_option="-u ${INFRA_PG_USER:-postgres}"
  write_pgbouncer_config
  cat <<CONF

[program:pgbouncer]
command=$binary $user_option $RUN_DIR/pgbouncer.ini
directory=$ROOT
priority=1
autostart=true
autorestart=true
startsecs=1
stopsignal=INT
stopwaitsecs=10
redirect_stderr=true
stdout_logfile=$RUN_DIR/logs/pgbouncer.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=2
CONF
}

migrate() {
  say "Migrating database $DB_NAME"
  "$VENV/bin/python" scripts/ensure_database.py "$DATABASE_URL"
  export_service_env
  local service
  for service in "${SERVICES[@]}"; do
    (cd "services/$service" && "$VENV/bin/alembic" upgrade head 2>&1 | sed "s/^/  [$service] /")
  done
}

write_supervisor_config() {
  mkdir -p "$RUN_DIR/logs"
  {
    cat <<CONF
[supervisord]
pidfile=$RUN_DIR/supervisord.pid
logfile=$RUN_DIR/logs/supervisord.log
directory=$ROOT
nodaemon=false

[unix_http_server]
file=$RUN_DIR/supervisor.sock

[supervisorctl]
serverurl=unix://$RUN_DIR/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
CONF
    [[ $POOLER == pgbouncer ]] && pgbouncer_program
    local process
    for process in "${PROCESSES[@]}"; do
      cat <<CONF

[program:$process]
command=$VENV/bin/${process%-[2-9]}
environment=$(slot_environment "$process")
directory=$ROOT
autostart=${AUTOSTART:-true}
autorestart=false
startsecs=1
stopsignal=TERM
stopwaitsecs=30
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$RUN_DIR/logs/$process.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=2
CONF
    done
  } >"$RUN_DIR/supervisord.conf"
}

ctl() { "$VENV/bin/supervisorctl" -c "$RUN_DIR/supervisord.conf" "$@"; }
supervisor_running() { [[ -f $RUN_DIR/supervisord.pid ]] && kill -0 "$(cat "$RUN_DIR/supervisord.pid")" 2>/dev/null; }

urls() {
  local service
  for service in gateway "${SERVICES[@]}"; do echo "http://127.0.0.1:$(port_of "$service")"; done
}

probes() {  # what must answer before the stack counts as up: every API and every worker
  local service
  echo "http://127.0.0.1:$(port_of gateway)/readyz"
  for service in "${SERVICES[@]}"; do
    echo "http://127.0.0.1:$(port_of "$service")/readyz"
    for slot in $(seq 1 "$REPLICAS"); do
      echo "http://127.0.0.1:$(($(port_of "$service" worker) + 10 * (slot - 1)))/healthz"
    done
  done
}

# A developer's stack gets an operator for the console: a token made once per checkout, kept
# in .run/dev/operator-token (readable by you alone); the orders service sees only its hash.
# make test's stack too (.run/e2e/operator-token): tests/e2e checks /admin's document with it.
ensure_operator() {
  [[ ($STACK == dev || $STACK == e2e) && -z ${ORDERS_OPERATOR_TOKENS:-} ]] || return 0
  ORDERS_OPERATOR_TOKENS=$("$VENV/bin/python" scripts/operator_token.py local --keep-in "$RUN_DIR/operator-token")
  export ORDERS_OPERATOR_TOKENS
}

# Every stack encrypts webhook signing secrets with a key made once per checkout and stack, kept
# in $RUN_DIR/webhook-secret-key (mode 600): the services refuse to start without a key, and
# one in the repository would be everyone's. NOTIFICATIONS_WEBHOOK_SECRET_KEY set by the caller
# wins. Run before every verb: compose requires the variable whatever it is asked to do.
ensure_webhook_key() {
  local file=$RUN_DIR/webhook-secret-key
  if [[ -z ${NOTIFICATIONS_WEBHOOK_SECRET_KEY:-} ]]; then
    if [[ ! -s $file ]]; then
      mkdir -p "$RUN_DIR"
      # A Fernet key: urlsafe base64 of 32 random bytes.
      (umask 077 && head -c 32 /dev/urandom | base64 | tr '+/' '-_' >"$file")
    fi
    NOTIFICATIONS_WEBHOOK_SECRET_KEY=$(<"$file")
  fi
  export NOTIFICATIONS_WEBHOOK_SECRET_KEY
}

print_urls() {
  local service
  printf '  %-14s http://127.0.0.1:%s  (docs: /docs; the one address clients need)\n' \
    gateway "$(port_of gateway)"
  for service in "${SERVICES[@]}"; do
    printf '  %-14s http://127.0.0.1:%s  (docs: /docs)   worker: http://127.0.0.1:%s/metrics\n' \
      "$service" "$(port_of "$service")" "$(port_of "$service" worker)"
  done
}

up_local() {
  record_mode local
  ensure_backing_services
  ensure_operator
  migrate
  if supervisor_running; then
    say "Stack '$STACK' already running; restarting its processes"
    write_supervisor_config
    ctl reread >/dev/null && ctl update >/dev/null
    ctl restart all >/dev/null
  else
    say "Starting ${PROCESSES[*]}"
    write_supervisor_config
    "$VENV/bin/supervisord" -c "$RUN_DIR/supervisord.conf"
  fi
  if [[ ${AUTOSTART:-true} == false ]]; then  # the upgrade drill starts them one by one
    say "Stack '$STACK' configured, nothing started (AUTOSTART=false; 'start NAME' starts one)"
    return 0
  fi
  say "Waiting for every API's /readyz and every worker's /healthz"
  # shellcheck disable=SC2046 # one URL a word
  if ! "$VENV/bin/python" scripts/wait_ready.py --timeout "${READY_TIMEOUT:-60}" $(probes); then
    ctl status || true
    die "the stack did not become ready; see 'make logs'"
  fi
  say "Stack '$STACK' is up (local processes; logs in $RUN_DIR/logs)"
  print_urls
  if [[ -f $RUN_DIR/operator-token ]]; then
    printf '  %-14s http://127.0.0.1:%s/admin/  (operator token: %s)\n' \
      console "$(port_of gateway)" "$RUN_DIR/operator-token"
  fi
}

down_local() {
  if ! supervisor_running; then rm -f "$MODE_FILE"; say "Stack '$STACK' is not running"; return 0; fi
  local pid; pid=$(cat "$RUN_DIR/supervisord.pid")
  say "Stopping stack '$STACK' (graceful: SIGTERM, in-flight work finishes)"
  ctl shutdown >/dev/null
  for _ in $(seq 1 160); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$MODE_FILE"; say "Stopped"; return 0; }
    sleep 0.25
  done
  die "supervisord ($pid) did not stop within 40 s"
}


record_mode() { mkdir -p "$RUN_DIR"; echo "$1" >"$MODE_FILE"; }

# ---- docker mode ------------------------------------------------------------------------------
# Compose reads COMPOSE_FILE and COMPOSE_PROJECT_NAME from the environment; `up` records them
# (and the base images) so that every later verb talks to the same project with the same files.
load_compose_env() {
  if [[ -s $COMPOSE_ENV ]]; then set -a; source "$COMPOSE_ENV"; set +a; fi
  export COMPOSE_FILE=${COMPOSE_FILE:-$ROOT/deploy/compose.yaml} COMPOSE_PROJECT_NAME=shop
  export COMPOSE_PATH_SEPARATOR=:
}

up_docker() {
  record_mode docker
  # Base images: the pinned ones, or stand-ins built from Debian packages where no registry
  # answers (cached: a few `docker image inspect`s once built).
  bash scripts/docker/standins.sh "$IMAGES_ENV"
  local files=() file
  IFS=: read -ra files <<<"${COMPOSE_FILE:-deploy/compose.yaml}"
  for file in "${!files[@]}"; do files[file]=$(realpath "${files[file]}"); done
  {
    echo "COMPOSE_FILE=$(IFS=:; echo "${files[*]}")"
    cat "$IMAGES_ENV"
    # An engine without a default bridge (dockerd --bridge=none) builds on the host's network.
    docker network inspect bridge >/dev/null 2>&1 || echo "BUILD_NETWORK=host"
  } >"$COMPOSE_ENV"
  load_compose_env
  SHOP_VERSION=$(python3 scripts/release.py current)  # the images' version label
  export SHOP_VERSION
  say "Building the images (${files[*]#"$ROOT"/})"
  "${COMPOSE[@]}" build --quiet
  say "Starting the compose stack (migrations first) and waiting until every service is healthy"
  if ! "${COMPOSE[@]}" up --detach --no-build --wait --wait-timeout "${WAIT_TIMEOUT:-180}"; then
    "${COMPOSE[@]}" ps --all || true
    die "the compose stack did not become healthy; see 'make logs'"
  fi
  say "Stack '$STACK' is up (Docker Compose project shop; 'make logs', 'make ps')"
  print_urls
}

down_docker() {
  load_compose_env
  say "Stopping the compose stack (graceful: SIGTERM, in-flight work finishes)${VOLUMES:+; dropping its volumes}"
  "${COMPOSE[@]}" down --remove-orphans ${VOLUMES:+--volumes}
  rm -f "$MODE_FILE" "$COMPOSE_ENV"
}

# The drills act on one container, as local mode's on one process; `start` starts that container
# alone (compose start would rerun its migrations job first).
container_of() {
  local id; id=$("${COMPOSE[@]}" ps --all --quiet "${1:?NAME=<process>}")
  [[ -n $id ]] || die "no container for $1"
  echo "$id"
}

# Tools that read the stack's database or Redis run in the orders API's container, which reaches
# both on the compose network; the script comes in on stdin (the images hold no scripts).
in_orders_api() { "${COMPOSE[@]}" exec -T orders-api "$@"; }

command=${1:-}
shift || true
ensure_webhook_key
case "$(mode):$command" in
  docker:up)      up_docker ;;
  docker:down)    down_docker ;;
  docker:ps)      load_compose_env; "${COMPOSE[@]}" ps --all ;;
  docker:logs)    load_compose_env; "${COMPOSE[@]}" logs --no-color --no-log-prefix ${FOLLOW:+--follow} ;;
  docker:migrate)
    load_compose_env
    "${COMPOSE[@]}" up --no-build --exit-code-from users-migrate users-migrate
    "${COMPOSE[@]}" up --no-build --exit-code-from orders-migrate orders-migrate
    "${COMPOSE[@]}" up --no-build --exit-code-from notifications-migrate notifications-migrate ;;
  docker:kill)    load_compose_env; "${COMPOSE[@]}" kill --signal SIGKILL "${1:?NAME=<process>}" && say "killed $1 with SIGKILL" ;;
  docker:start)   load_compose_env; docker start "$(container_of "${1:-}")" >/dev/null && say "started $1" ;;
  docker:stop)    load_compose_env; "${COMPOSE[@]}" stop "${1:?NAME=<process>}" ;;
  docker:urls)    urls ;;
  docker:db-status)
    load_compose_env
    in_orders_api sh -c 'exec python -m common.partition_maintenance "$ORDERS_DATABASE_URL"' ;;
  docker:check-invariants)
    load_compose_env
    in_orders_api sh -c 'exec python - "$ORDERS_DATABASE_URL"' <scripts/check_invariants.py ;;
  docker:dead-letters)
    load_compose_env
    in_orders_api sh -c 'exec python -m common.bus --redis-url "$ORDERS_REDIS_URL" "$@"' dead-letters "$@" ;;
  local:up)       up_local ;;
  local:down)     down_local ;;
  local:ps)       if supervisor_running; then ctl status || true; else echo "stack '$STACK' is not running"; fi ;;
  local:logs)
    # Each line starts with its timestamp, so merging the files keeps the stack's order.
    if [[ -n ${FOLLOW:-} ]]; then tail -q -n 50 -F "$RUN_DIR"/logs/*-*.log
    else sort -m -s "$RUN_DIR"/logs/*-*.log; fi ;;
  local:migrate)  ensure_backing_services; migrate ;;
  local:kill)     # SIGKILL, no goodbye: the fault drill. Nothing restarts it but `start`.
    name=${1:?NAME=<process>}
    pid=$(ctl pid "$name")
    [[ $pid =~ ^[0-9]+$ && $pid != 0 ]] || die "$name is not running"
    kill -KILL "$pid"
    say "killed $name (pid $pid) with SIGKILL" ;;
  local:start)    ctl start "${1:?NAME=<process>}" ;;
  local:stop)     ctl stop "${1:?NAME=<process>}" ;;  # graceful: SIGTERM, in-flight work finishes
  local:urls)     urls ;;
  *:check-invariants) "$VENV/bin/python" scripts/check_invariants.py "$DATABASE_URL" ;;
  *:db-status) "$VENV/bin/python" -m common.partition_maintenance "$DATABASE_URL" ;;
  *:dead-letters)
    if [[ -n ${REDIS_CLUSTER_NODES:-} ]]; then "$VENV/bin/python" -m common.bus --cluster-nodes "$REDIS_CLUSTER_NODES" "$@"
    else "$VENV/bin/python" -m common.bus --redis-url "$REDIS_URL" "$@"; fi ;;
  *) die "usage: stack.sh up|down|ps|logs|migrate|kill NAME|stop NAME|start NAME|check-invariants|db-status|dead-letters list|replay|urls" ;;
esac
