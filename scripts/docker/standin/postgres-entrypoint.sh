#!/bin/bash
# Entry point of the Postgres stand-in (Debian's postgresql-15), honouring the environment of the
# official image: POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
# POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default: the user), PGDATA,
# POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256). As there: the first
# start of an empty data directory runs initdb and creates the database; the server then runs as
# the postgres user, listening on every address; arguments starting with '-' go to postgres.
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA
if [[ $# == 0 || ${1:0:1} == - ]]; then set -- postgres "$@"; fi
if [[ $1 != postgres ]]; then exec "$@"; fi

if [[ $(id -u) == 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  user=${POSTGRES_USER:-postgres}
  database=${POSTGRES_DB:-$user}
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
    echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  password_file=$(mktemp)
  printf '%s' "${POSTGRES_PASSWORD:-}" >"$password_file"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
  initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host="$auth" \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$password_file"
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
  pg_ctl --wait --silent --options="-c listen_addresses='' -p 5432" start
  if [[ $database != postgres ]]; then
    psql --quiet --username="$user" --dbname=postgres --set=ON_ERROR_STOP=1 \
      --set=name="$database" <<<'CREATE DATABASE :"name"'
  fi
  pg_ctl --wait --silent --mode=fast stop
  echo "stand-in: initialized $PGDATA (user $user, database $database)"
fi
exec "$@"
