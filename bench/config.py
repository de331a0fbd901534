"""The benchmark's settings: command line, constants, targets, and its progress log."""

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("users", "orders", "notifications")
PROCESSES = tuple(f"{service}-{kind}" for service in SERVICES for kind in ("api", "worker"))
# What a saga costs the machine: the six processes, Postgres, Redis and interrupt time.
STACK_CPU = (*PROCESSES, "postgres", "redis", "irq")


# The targets of docs/design.md section 8, as bench/targets.py checks them.
TARGET_CPU_MS_PER_SAGA = {20.0: 15.0, 100.0: 10.0}  # offered rate -> CPU ms per saga
TARGET_SAGAS_PER_SECOND = 150
TARGET_OVERLOAD_P99_MS = 1000.0  # accepted orders at 2x the sustained rate
TARGET_READ_RATIO = 1.0
TARGET_IDLE_PERCENT = 3.0  # the whole stack idle, % of one core
# Issue 21: on a preloaded database, against the same run's empty one.
TARGET_PRELOADED_RATIO = 1.2  # CPU per saga and list p99, preloaded / empty
TARGET_LIST_P99_MS = 20.0
TARGET_RETENTION_DROP_S = 1.0  # and no saga waiting on it
# The ladder always measures this rate (the rate of the 10 ms target) unless nothing moves.
TARGET_AT_RATE = 100
FINAL_SETTLE_SECONDS = 180.0
SUSTAIN_P99_MS = 250.0
PHASES = ("start", "sign-up", "read", "saga", "preload")
KEEP_UP_SHARE = 0.95  # a step is sustained when at least this share of the offered rate completed
# The overload step's backlog is bounded by admission; give it time to drain.
OVERLOAD_SETTLE_SECONDS = 60.0

STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


@dataclass(frozen=True)
class Config:
    users_url: str
    orders_url: str
    worker_metrics: tuple[str, ...]
    dsn: str
    redis_url: str
    run_dir: Path
    baseline_port: int
    connections: int
    read_seconds: float
    warmup_seconds: float
    rounds: int
    rates: tuple[float, ...]
    step_seconds: float
    users: int
    settle_seconds: float
    results_dir: Path
    profile: str | None
    profile_rate: float
    parts: tuple[str, ...]
    preload_orders: int
    idle_seconds: float
    idle_settle_seconds: float
    overload: bool
    compare_rates: tuple[float, ...]

    @property
    def database(self) -> str:
        """The bench database's name, from the DSN."""
        return self.dsn.rsplit("/", 1)[-1].split("?")[0]


@dataclass(frozen=True)
class BenchUser:
    id: str
    token: str


def rates(text: str) -> tuple[float, ...]:
    return tuple(float(rate) for rate in text.split(",") if rate.strip())


def parse_args(argv: list[str] | None = None) -> Config:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="The stack's load benchmark (bench/README.md).")
    parser.add_argument("--port-base", type=int, default=int(env("PORT_BASE", "28000")))
    parser.add_argument(
        "--worker-port-base", type=int, default=int(env("WORKER_PORT_BASE", "29000"))
    )
    parser.add_argument(
        "--dsn", default=env("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/app_bench")
    )
    parser.add_argument("--redis-url", default=env("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run" / "bench")
    parser.add_argument("--baseline-port", type=int, default=28010)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--read-seconds", type=float, default=10.0, help="one wrk run")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per target, alternated")
    parser.add_argument("--rates", default=env("BENCH_RATES", "20,50,100,150,200,300,400"))
    parser.add_argument("--step-seconds", type=float, default=10.0, help="one saga step")
    parser.add_argument("--users", type=int, default=100, help="users placing orders")
    parser.add_argument("--settle-seconds", type=float, default=15.0)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--profile", default=env("BENCH_PROFILE") or None, choices=PROCESSES)
    parser.add_argument(
        "--profile-rate", type=float, default=float(env("BENCH_PROFILE_RATE", "100"))
    )
    parser.add_argument(
        "--only", choices=("read", "saga"), help="measure one part (memory is always reported)"
    )
    parser.add_argument(
        "--preload-orders",
        type=int,
        default=0,
        help="after the empty database's figures, COPY N orders of history (preload.py);"
        " then measure again",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=20.0, help="idle CPU window after the load (0: skip)"
    )
    parser.add_argument(
        "--idle-settle-seconds",
        type=float,
        default=20.0,
        help="quiet time before the idle window: the loops' cadences back off to their idle"
        " ones (the consumers' reclaim after 15 s with nothing pending)",
    )
    parser.add_argument(
        "--no-overload", action="store_true", help="skip the step at 2x the sustained rate"
    )
    parser.add_argument(
        "--compare-rates",
        default="20,100",
        help="saga rates measured again after the preload (the lowest: during the retention drop)",
    )
    args = parser.parse_args(argv)
    return Config(
        users_url=f"http://127.0.0.1:{args.port_base + 1}",
        orders_url=f"http://127.0.0.1:{args.port_base + 2}",
        worker_metrics=tuple(
            f"http://127.0.0.1:{args.worker_port_base + index}/metrics" for index in (1, 2, 3)
        ),
        dsn=args.dsn,
        redis_url=args.redis_url,
        run_dir=args.run_dir,
        baseline_port=args.baseline_port,
        connections=args.connections,
        read_seconds=args.read_seconds,
        warmup_seconds=args.warmup_seconds,
        rounds=args.rounds,
        rates=rates(args.rates),
        step_seconds=args.step_seconds,
        users=args.users,
        settle_seconds=args.settle_seconds,
        results_dir=args.results_dir,
        profile=args.profile,
        profile_rate=args.profile_rate,
        parts=(args.only,) if args.only else ("read", "saga"),
        preload_orders=args.preload_orders,
        idle_seconds=args.idle_seconds,
        idle_settle_seconds=args.idle_settle_seconds,
        overload=not args.no_overload,
        compare_rates=rates(args.compare_rates),
    )
