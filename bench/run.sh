#!/usr/bin/env bash
# `make bench`: sync, bring up a fresh bench stack, run the benchmark, bring it down.
#
# The bench stack is `STACK=bench scripts/stack.sh` (ports 28001-28003, workers 29001-29003,
# database app_bench, Redis DB 13, rate limits raised, logs at WARNING), so it never disturbs
# a stack from `make up` or `make test`. It starts from an empty database every time and is
# brought down on any exit, leaving no process behind. Arguments go to bench/bench.py
# (`bash bench/run.sh --help`); BENCH_RATES=50,100 and BENCH_PROFILE=orders-worker work too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export STACK=bench MODE=local
UV=${UV:-uv}
STACK_SH=(scripts/stack.sh)
PG_HOST=${PG_HOST:-127.0.0.1} PG_PORT=${PG_PORT:-5432} PG_USER=${PG_USER:-postgres}
REDIS_HOST=${REDIS_HOST:-127.0.0.1} REDIS_PORT=${REDIS_PORT:-6379}
export PORT_BASE=${PORT_BASE:-28000} WORKER_PORT_BASE=${WORKER_PORT_BASE:-29000}
export DB_NAME=${DB_NAME:-app_bench} REDIS_DB=${REDIS_DB:-13}
export BENCH_DSN=postgresql://$PG_USER@$PG_HOST:$PG_PORT/$DB_NAME
export BENCH_REDIS_URL=redis://$REDIS_HOST:$REDIS_PORT/$REDIS_DB
RUN_DIR=$ROOT/.run/bench

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if ! command -v wrk >/dev/null; then
  [[ $(id -u) == 0 ]] || { echo "error: wrk is missing: sudo apt-get install -y wrk" >&2; exit 1; }
  say "Installing wrk (Debian package)"
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi
if [[ -n ${BENCH_PROFILE:-} ]] && ! command -v py-spy >/dev/null; then
  "$UV" tool run py-spy --version >/dev/null  # fetched once into uv's cache
fi
"$UV" sync --frozen --quiet

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -f $RUN_DIR/baseline.pid ]]; then  # only if bench.py itself died before stopping it
    pid=$(cat "$RUN_DIR/baseline.pid")
    if grep -qs bench.baseline "/proc/$pid/cmdline"; then kill "$pid" 2>/dev/null || true; fi
    rm -f "$RUN_DIR/baseline.pid"
  fi
  "${STACK_SH[@]}" down || status=1
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${STACK_SH[@]}" down  # a stack left over by an interrupted run
# `migrate` makes sure Postgres and Redis answer (starting local ones if needed); then the
# bench database is dropped so that `up` migrates a fresh one.
"${STACK_SH[@]}" migrate >/dev/null
say "Resetting database $DB_NAME and Redis DB $REDIS_DB"
.venv/bin/python -m bench.reset "$BENCH_DSN" "$BENCH_REDIS_URL"
"${STACK_SH[@]}" up
# A preload (--preload-orders N) COPYs about 7 rows an order at 15,000-20,000 rows/s, then
# measures again: 1,000,000 orders take 10-20 minutes more.
limit=600
for arg in "$@"; do if [[ $arg == --preload-orders* ]]; then limit=3600; fi; done
limit=${BENCH_TIMEOUT:-$limit}
say "Benchmark (bounded: about 5 minutes without a preload, $((limit / 60)) at most)"
timeout --foreground "$limit" .venv/bin/python -m bench.bench "$@"
say "Invariants after the load (credit reservations = approved orders, no saga overdue)"
"${STACK_SH[@]}" check-invariants
