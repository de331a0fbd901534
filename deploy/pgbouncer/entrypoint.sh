#!/usr/bin/env bash
# PgBouncer's entry point: writes its configuration from the environment, then runs it.
#
# Upstreams and credentials come from the same variables the services read, so there is one
# place for a password (the Secret app-credentials in Kubernetes, compose's environment):
#   <PREFIX>_DATABASE_DIRECT_URL   every variable with this suffix (USERS_, ORDERS_,
#                                  NOTIFICATIONS_): postgresql[+asyncpg]://user:password@host:port/db
#                                  [?ssl=<mode>]. Each database gets a [databases] entry (same
#                                  name, same host), each user an auth_file line with its password;
#                                  clients log in with that user and password to PgBouncer, which
#                                  logs in to Postgres as the same user.
# Optional:
#   PGBOUNCER_STATEMENT_TIMEOUT_MS  statement_timeout of every server connection (connect_query),
#                                   default 10000, the services' <PREFIX>_DB_STATEMENT_TIMEOUT_MS
#   PGBOUNCER_MAX_CLIENT_CONN, PGBOUNCER_DEFAULT_POOL_SIZE, PGBOUNCER_MAX_DB_CONNECTIONS,
#   PGBOUNCER_RESERVE_POOL_SIZE, PGBOUNCER_QUERY_WAIT_TIMEOUT
#                                   override the sizing of the base configuration
#   PGBOUNCER_SERVER_TLS_CA_FILE    CA bundle for ssl=verify-ca / verify-full
#   PGBOUNCER_LISTEN_ADDR, PGBOUNCER_LISTEN_PORT
#                                   where it listens, instead of the base's * and 6432 (a test
#                                   on a free loopback port; the images keep the base's)
#   PGBOUNCER_USER                  started as root (a test or a bare host, not the image, which
#                                   runs as uid 10001): PgBouncer reads its files, then becomes
#                                   this user (its -u); it refuses to run as root
#   PGBOUNCER_RUN_DIR (/run/pgbouncer), PGBOUNCER_BASE_CONFIG (/etc/pgbouncer/pgbouncer.ini),
#   PGBOUNCER_BIN (pgbouncer)       where it writes, what it reads, what it runs
#
# The generated files live in PGBOUNCER_RUN_DIR (a memory-backed volume: the root file system is
# read-only), the auth_file with mode 0600. PgBouncer then replaces this shell (PID 1 stays
# PgBouncer, which handles the stop signal: SIGINT, see the Dockerfile).
set -euo pipefail

RUN_DIR=${PGBOUNCER_RUN_DIR:-/run/pgbouncer}
BASE=${PGBOUNCER_BASE_CONFIG:-/etc/pgbouncer/pgbouncer.ini}
STATEMENT_TIMEOUT_MS=${PGBOUNCER_STATEMENT_TIMEOUT_MS:-10000}
SIZING=(max_client_conn default_pool_size max_db_connections reserve_pool_size query_wait_timeout)

die() { echo "pgbouncer-entrypoint: $*" >&2; exit 1; }

# Percent-decoding (a URL's user and password may be encoded), literal backslashes kept.
urldecode() { local s=${1//\\/\\\\}; printf '%b' "${s//%/\\x}"; }

[[ -r $BASE ]] || die "no base configuration at $BASE"
[[ $(grep -c '^\[' "$BASE") == 1 && $(grep '^\[' "$BASE") == "[pgbouncer]" ]] \
  || die "$BASE must hold the [pgbouncer] section alone (the entry point appends to it)"
[[ $STATEMENT_TIMEOUT_MS =~ ^[0-9]+$ ]] || die "PGBOUNCER_STATEMENT_TIMEOUT_MS is not a number: $STATEMENT_TIMEOUT_MS"
[[ -z ${PGBOUNCER_LISTEN_PORT:-} || $PGBOUNCER_LISTEN_PORT =~ ^[0-9]+$ ]] \
  || die "PGBOUNCER_LISTEN_PORT is not a number: $PGBOUNCER_LISTEN_PORT"
# One address, a comma-separated list, or *: nothing that could end the line's value.
[[ -z ${PGBOUNCER_LISTEN_ADDR:-} || $PGBOUNCER_LISTEN_ADDR =~ ^[][A-Za-z0-9.:,*_-]+$ ]] \
  || die "PGBOUNCER_LISTEN_ADDR has characters this entry point does not write: $PGBOUNCER_LISTEN_ADDR"
[[ -z ${PGBOUNCER_USER:-} || $PGBOUNCER_USER =~ ^[A-Za-z0-9_.-]+$ ]] \
  || die "PGBOUNCER_USER is not a user name: $PGBOUNCER_USER"

declare -A PASSWORDS=() DATABASES=() TLS_MODES=()
found=0
for variable in $(compgen -e | grep '_DATABASE_DIRECT_URL$' | sort); do
  url=${!variable}
  [[ -n $url ]] || continue
  found=$((found + 1))
  [[ $url =~ ^postgres(ql)?(\+[a-z0-9]+)?://([^@/]+)@([^/?]+)/([^?]+)(\?(.*))?$ ]] \
    || die "$variable is not postgresql://user:password@host[:port]/database[?...]"
  userinfo=${BASH_REMATCH[3]} hostport=${BASH_REMATCH[4]} database=${BASH_REMATCH[5]} query=${BASH_REMATCH[7]}
  [[ $userinfo == *:* ]] || die "$variable has no password (PgBouncer logs clients in with it)"
  user=$(urldecode "${userinfo%%:*}") password=$(urldecode "${userinfo#*:}")
  database=$(urldecode "$database")
  if [[ $hostport =~ ^\[([0-9A-Fa-f:.]+)\](:([0-9]+))?$ ]]; then  # [IPv6]:port
    host=${BASH_REMATCH[1]} port=${BASH_REMATCH[3]:-5432}
  elif [[ $hostport =~ ^([A-Za-z0-9_.-]+)(:([0-9]+))?$ ]]; then
    host=${BASH_REMATCH[1]} port=${BASH_REMATCH[3]:-5432}
  else
    die "$variable: cannot read host and port from '$hostport'"
  fi
  # Names go into the configuration unquoted: refuse what could change its meaning.
  [[ $user =~ ^[A-Za-z0-9_.-]+$ ]] || die "$variable: user name '$user' has characters this entry point does not quote"
  [[ $database =~ ^[A-Za-z0-9_.-]+$ ]] || die "$variable: database name '$database' has characters this entry point does not quote"
  [[ -z ${PASSWORDS[$user]+set} || ${PASSWORDS[$user]} == "$password" ]] \
    || die "user $user has different passwords in two *_DATABASE_DIRECT_URL"
  PASSWORDS[$user]=$password
  target="host=$host port=$port dbname=$database"
  [[ -z ${DATABASES[$database]+set} || ${DATABASES[$database]} == "$target" ]] \
    || die "database $database is on two servers in two *_DATABASE_DIRECT_URL"
  DATABASES[$database]=$target
  # asyncpg's ssl=<mode> (libpq's sslmode=<mode>) becomes PgBouncer's server TLS mode.
  mode=""
  IFS='&' read -ra parameters <<<"$query"
  for parameter in "${parameters[@]}"; do
    case ${parameter%%=*} in
      ssl|sslmode) mode=${parameter#*=} ;;
      "") ;;
      *) echo "pgbouncer-entrypoint: $variable: ignoring parameter ${parameter%%=*}" >&2 ;;
    esac
  done
  case $mode in
    true) mode=require ;;
    false) mode=disable ;;
    ""|disable|allow|prefer|require|verify-ca|verify-full) ;;
    *) die "$variable: unknown ssl mode '$mode'" ;;
  esac
  TLS_MODES[${mode:-default}]=1
done
((found)) || die "no *_DATABASE_DIRECT_URL in the environment: nothing to pool"
((${#TLS_MODES[@]} == 1)) || die "the *_DATABASE_DIRECT_URL ask for different ssl modes (${!TLS_MODES[*]}); PgBouncer has one"
tls_mode=${!TLS_MODES[*]}

umask 077
mkdir -p "$RUN_DIR" || die "cannot create $RUN_DIR (mount a writable volume there)"
auth_file=$RUN_DIR/userlist.txt
: >"$auth_file" || die "cannot write to $RUN_DIR as uid $(id -u) (mount a volume there that this user can write, e.g. a tmpfs with uid=10001,gid=10001)"
for user in "${!PASSWORDS[@]}"; do
  printf '"%s" "%s"\n' "$user" "${PASSWORDS[$user]//\"/\"\"}" >>"$auth_file"
done

config=$RUN_DIR/pgbouncer.ini
{
  echo "; Written by pgbouncer-entrypoint at start, from $BASE and the environment."
  echo "[databases]"
  for database in $(printf '%s\n' "${!DATABASES[@]}" | sort); do
    echo "$database = ${DATABASES[$database]} connect_query='SET statement_timeout = $STATEMENT_TIMEOUT_MS'"
  done
  echo
  cat "$BASE"
  echo
  echo "; ---- from the environment (later lines win) ----"
  echo "auth_file = $auth_file"
  if [[ $tls_mode != default ]]; then
    echo "server_tls_sslmode = $tls_mode"
    if [[ $tls_mode == verify-* ]]; then
      ca_file=${PGBOUNCER_SERVER_TLS_CA_FILE:-/etc/ssl/certs/ca-certificates.crt}
      [[ -r $ca_file ]] || die "ssl=$tls_mode needs a CA bundle: mount one and set PGBOUNCER_SERVER_TLS_CA_FILE"
      echo "server_tls_ca_file = $ca_file"
    fi
  fi
  if [[ -n ${PGBOUNCER_LISTEN_ADDR:-} ]]; then echo "listen_addr = $PGBOUNCER_LISTEN_ADDR"; fi
  if [[ -n ${PGBOUNCER_LISTEN_PORT:-} ]]; then echo "listen_port = $PGBOUNCER_LISTEN_PORT"; fi
  for setting in "${SIZING[@]}"; do
    variable=PGBOUNCER_${setting^^}
    if [[ -n ${!variable:-} ]]; then
      [[ ${!variable} =~ ^[0-9]+$ ]] || die "$variable is not a number: ${!variable}"
      echo "$setting = ${!variable}"
    fi
  done
} >"$config"

echo "pgbouncer-entrypoint: databases: ${!DATABASES[*]}; users: ${!PASSWORDS[*]}; server TLS: $tls_mode" >&2
switch_user=()
[[ -z ${PGBOUNCER_USER:-} ]] || switch_user=(-u "$PGBOUNCER_USER")
exec "${PGBOUNCER_BIN:-pgbouncer}" "${switch_user[@]}" "$config"
