"""`make bench`: measure the stack against its baseline; print one table, write it as JSON.

Runs against the stack `bench/run.sh` brings up (``STACK=bench``: its own ports, database
``app_bench`` and Redis DB, rate limits raised, logging at WARNING). What is measured and
how is in bench/README.md. Every load is bounded in count and time and goes to loopback.

    python -m bench.bench [--rates 50,75,100,150,200,300,400] [--profile orders-worker] ...
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from bench import gateway, histograms, preload, procs, stacklogs, wrk
from bench.loadgen import quantiles_ms
from common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("users", "orders", "notifications")
WORKER_POOL_SETTINGS = ("worker_db_pool_size", "worker_db_max_overflow")
PROCESSES = tuple(f"{service}-{kind}" for service in SERVICES for kind in ("api", "worker"))
# What a saga costs the machine: the six processes, Postgres, Redis and interrupt time.
STACK_CPU = (*PROCESSES, "postgres", "redis", "irq")
BUS_METRIC = "bus_handle_latency_seconds"
BUS_LABELS = ("group", "type")

# The targets of DESIGN.md section 8 as this benchmark checks them (see bench/README.md).
TARGET_READ_RATIO = 1.0
TARGET_SAGAS_PER_SECOND = 300
TARGET_AT_RATE = 100
TARGET_CPU_MS_PER_SAGA = 7.0
CPU_FIGURE_AT_RATE = 20  # CPU per saga is quoted at this rate: well below saturation
FINAL_SETTLE_SECONDS = 180.0
TARGET_P50_MS = 30.0
TARGET_P99_MS = 150.0
SUSTAIN_P99_MS = 250.0
TARGET_RSS_MIB = 150.0
PHASES = ("start", "sign-up", "read", "saga")
KEEP_UP_SHARE = 0.95  # a step is sustained when at least this share of the offered rate completed

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


@dataclass(frozen=True)
class BenchUser:
    id: str
    token: str


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
        "--preload-orders", type=int, default=0, help="first COPY N orders of history (preload.py)"
    )
    args = parser.parse_args(argv)
    if args.preload_orders:
        log(preload.report(asyncio.run(preload.preload(args.dsn, args.preload_orders, months=6))))
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
        rates=tuple(float(rate) for rate in args.rates.split(",") if rate.strip()),
        step_seconds=args.step_seconds,
        users=args.users,
        settle_seconds=args.settle_seconds,
        results_dir=args.results_dir,
        profile=args.profile,
        profile_rate=args.profile_rate,
        parts=(args.only,) if args.only else ("read", "saga"),
    )


# --------------------------------------------------------------------------- the stack


def supervised_pid(config: Config, name: str) -> int | None:
    """A process's pid from the bench stack's supervisord; None when it does not run."""
    result = subprocess.run(  # noqa: S603 - our own venv's supervisorctl, fixed arguments
        [
            str(ROOT / ".venv" / "bin" / "supervisorctl"),
            "-c",
            str(config.run_dir / "supervisord.conf"),
            "pid",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    pid = result.stdout.strip()
    return int(pid) if pid.isdigit() and pid != "0" else None


def replica_pids(config: Config, name: str) -> list[int]:
    """The pids of a process's other slots under ``REPLICAS=n`` (``users-api-2``...), so
    that CPU per saga counts every replica, not only the first."""
    slots = (supervised_pid(config, f"{name}-{slot}") for slot in range(2, 10))
    return [pid for pid in slots if pid is not None]


def stack_pids(config: Config) -> dict[str, int]:
    """The pid of each of the six processes that runs (slot 1 under ``REPLICAS=n``)."""
    pids = {}
    for name in PROCESSES:
        pid = supervised_pid(config, name)
        if pid is None:
            log(f"WARNING: {name} is not running in the bench stack")
            continue
        pids[name] = pid
        if procs.children(int(pid)):
            log(f"note: {name} (pid {pid}) has child processes; only its own memory is counted")
    return pids


def machine_quiet_check() -> dict[str, Any]:
    """How busy the machine was just before the run: other work skews every figure."""
    first = procs.machine_cpu()
    time.sleep(1.0)
    second = procs.machine_cpu()
    busy = 100 * (second[0] - first[0]) / max(second[1] - first[1], 1e-9)
    load1 = float(Path("/proc/loadavg").read_text().split()[0])
    return {"cpu_busy_percent_before": round(busy, 1), "loadavg_1m_before": load1}


async def postgres_headroom(pool: asyncpg.Pool) -> dict[str, Any]:
    """Can Postgres take every connection the stack may open? (three APIs' and three
    workers' pools, each size + overflow: common.db.PoolBounds, the defaults unless set)."""
    limit = int(await pool.fetchval("SHOW max_connections"))
    in_use = int(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND datname IS DISTINCT FROM current_database()"
        )
    )
    may_open = 0
    for service in SERVICES:
        prefix = service.upper()
        for setting in ("db_pool_size", "db_max_overflow", *WORKER_POOL_SETTINGS):
            default = ServiceSettings.model_fields[setting].default
            may_open += int(os.environ.get(f"{prefix}_{setting.upper()}", default))
    if in_use + may_open > limit:
        log(
            f"WARNING: the stack's pools may open up to {may_open} Postgres connections and"
            f" other databases use {in_use}, over max_connections {limit}: under overload,"
            " expect 'too many clients' errors"
        )
    return {"max_connections": limit, "others_in_use": in_use, "stack_pools_may_open": may_open}


async def create_users(client: httpx.AsyncClient, config: Config) -> list[BenchUser]:
    """Many users with big credit limits (every order is approved), each with a session."""
    run_id = uuid.uuid4().hex[:8]
    # Password hashing is CPU-bound (argon2id) and there are two cores: more at once is no
    # faster, and each hash in flight holds 19 MiB in the users API.
    gate = asyncio.Semaphore(2)

    async def one(index: int) -> BenchUser:
        email = f"bench-{run_id}-{index}@example.com"
        password = f"bench-password-{run_id}"
        async with gate:
            created = await client.post(
                f"{config.users_url}/users",
                json={
                    "email": email,
                    "password": password,
                    "name": f"Bench {index}",
                    "credit_limit_cents": 100_000_000,
                },
            )
            created.raise_for_status()
            session = await client.post(
                f"{config.users_url}/users/sessions", json={"email": email, "password": password}
            )
            session.raise_for_status()
        return BenchUser(id=created.json()["id"], token=session.json()["token"])

    return list(await asyncio.gather(*(one(index) for index in range(config.users))))


# --------------------------------------------------------------------------- read path


async def start_baseline(config: Config, client: httpx.AsyncClient) -> asyncio.subprocess.Process:
    log_path = config.run_dir / "logs" / "baseline.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.baseline.app",
            "--dsn",
            config.dsn,
            "--port",
            str(config.baseline_port),
            cwd=ROOT,
            stdout=log_file,
            stderr=log_file,
        )
    (config.run_dir / "baseline.pid").write_text(str(process.pid))
    url = f"http://127.0.0.1:{config.baseline_port}/healthz"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.returncode is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url, timeout=1.0)).status_code == 200:
                return process
        await asyncio.sleep(0.2)
    await stop_process(process)
    raise SystemExit(f"the baseline did not start; see {log_path}")


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def same_answer(client: httpx.AsyncClient, config: Config, user: BenchUser) -> None:
    """The baseline must read what the service reads, or the comparison means nothing."""
    headers = {"authorization": f"Bearer {user.token}"}
    service = (await client.get(f"{config.users_url}/users/{user.id}", headers=headers)).json()
    baseline = (await client.get(f"http://127.0.0.1:{config.baseline_port}/users/{user.id}")).json()
    for record in (service, baseline):
        record["created_at"] = datetime.fromisoformat(record["created_at"].replace("Z", "+00:00"))
    if service != baseline:
        raise SystemExit(f"baseline and service disagree:\n  {service}\n  {baseline}")


async def read_path(
    config: Config,
    client: httpx.AsyncClient,
    user: BenchUser,
    cpu: procs.CpuTracker,
    pids: dict[str, int],
) -> dict[str, Any]:
    profile: dict[str, Any] | None = None
    baseline = await start_baseline(config, client)
    try:
        await same_answer(client, config, user)
        targets = {
            "service": f"{config.users_url}/users/{user.id}",
            "baseline": f"http://127.0.0.1:{config.baseline_port}/users/{user.id}",
        }
        cpu.add("baseline", procs.fixed(baseline.pid))
        for name, url in targets.items():
            log(f"read path: warm-up {name} ({config.warmup_seconds:g} s)")
            await wrk.run(url, token=user.token, connections=8, seconds=config.warmup_seconds)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for round_number in range(1, config.rounds + 1):
            for name, url in targets.items():
                profiler = None
                if config.profile == "users-api" and name == "service" and round_number == 1:
                    profiler = await profile_start(
                        config, pids["users-api"], config.read_seconds - 1
                    )
                before, started = cpu.take(), time.monotonic()
                result = await wrk.run(
                    url,
                    token=user.token,
                    connections=config.connections,
                    seconds=config.read_seconds,
                )
                usage = cpu.take().percent_since(before, time.monotonic() - started)
                if profiler is not None:
                    await asyncio.wait_for(profiler.wait(), timeout=60)
                    profile = profile_report(config, "read path, service round 1")
                runs[name].append(
                    {
                        "requests_per_second": result.requests_per_second,
                        "requests": result.requests,
                        "latency_ms": result.latency_ms,
                        "non_2xx": result.non_2xx,
                        "socket_errors": result.socket_errors,
                        "cpu_percent": {k: round(v, 1) for k, v in usage.items()},
                    }
                )
                latency, errors = result.latency_ms, result.non_2xx + result.socket_errors
                log(
                    f"read path: {name} round {round_number}/{config.rounds}: "
                    f"{result.requests_per_second:,.0f} req/s, p50 {latency['p50']:.2f} ms,"
                    f" p99 {latency['p99']:.2f} ms, errors {errors}"
                )
    finally:
        cpu.remove("baseline")
        await stop_process(baseline)
        with contextlib.suppress(OSError):
            (config.run_dir / "baseline.pid").unlink()

    def summary(name: str) -> dict[str, Any]:
        rounds = runs[name]
        # The server side of a request: the API process (or the baseline), Postgres, Redis.
        server = ("users-api" if name == "service" else "baseline", "postgres", "redis")
        cpu_ms = [
            10 * sum(r["cpu_percent"].get(p, 0.0) for p in server) * config.read_seconds
            for r in rounds
        ]
        return {
            "cpu_ms_per_request": sum(cpu_ms) / max(sum(r["requests"] for r in rounds), 1),
            "requests_per_second": sum(r["requests_per_second"] for r in rounds) / len(rounds),
            "p50_ms": sum(r["latency_ms"]["p50"] for r in rounds) / len(rounds),
            "p99_ms": max(r["latency_ms"]["p99"] for r in rounds),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in rounds),
            "rounds": rounds,
        }

    service, base = summary("service"), summary("baseline")
    return {
        "endpoint": "GET /users/{id} (own id, bearer token)",
        "load": f"wrk -t1 -c{config.connections} -d{config.read_seconds:g}s --latency, "
        f"{config.rounds} rounds alternated, after {config.warmup_seconds:g} s warm-up each",
        "service": service,
        "baseline": base,
        "ratio": service["requests_per_second"] / base["requests_per_second"],
        **({"profile": profile} if profile else {}),
    }


# --------------------------------------------------------------------------- order saga


@dataclass(frozen=True)
class BusScrape:
    """The bus metrics of the three workers at one instant."""

    latency: histograms.Series
    failed: dict[tuple[str, ...], float]
    dead_lettered: dict[tuple[str, ...], float]


async def scrape_bus(client: httpx.AsyncClient, config: Config) -> BusScrape:
    latency: histograms.Series = {}
    failed: dict[tuple[str, ...], float] = {}
    dead: dict[tuple[str, ...], float] = {}
    for url in config.worker_metrics:  # (group, type) is unique to one worker
        text = await histograms.fetch(client, url)
        latency.update(histograms.parse_histogram(text, BUS_METRIC, BUS_LABELS))
        failed.update(histograms.parse_counter(text, "bus_messages_failed", BUS_LABELS))
        dead.update(histograms.parse_counter(text, "bus_messages_dead_lettered", BUS_LABELS))
    return BusScrape(latency, failed, dead)


def bus_summary(before: BusScrape, after: BusScrape) -> dict[str, Any]:
    series = histograms.delta(before.latency, after.latency)
    merged = histograms.merge(series)

    def ms(q: float, buckets: dict[float, float]) -> float | None:
        value = histograms.quantile(buckets, q)
        return None if value is None else value * 1000

    def grown(
        old: dict[tuple[str, ...], float], new: dict[tuple[str, ...], float]
    ) -> dict[str, int]:
        return {
            "/".join(key): round(value - old.get(key, 0.0))
            for key, value in sorted(new.items())
            if value - old.get(key, 0.0) > 0
        }

    return {
        "count": histograms.count(merged),
        "p50_ms": ms(0.5, merged),
        "p99_ms": ms(0.99, merged),
        "by_type": {
            f"{group}/{kind}": {
                "count": histograms.count(buckets),
                "p50_ms": ms(0.5, buckets),
                "p99_ms": ms(0.99, buckets),
            }
            for (group, kind), buckets in sorted(series.items())
            if histograms.count(buckets)
        },
        "handler_failures": grown(before.failed, after.failed),
        "dead_lettered": grown(before.dead_lettered, after.dead_lettered),
    }


async def backend_counters(pool: asyncpg.Pool, redis: Redis) -> dict[str, float]:
    """Cumulative work counters of Postgres (this database) and Redis (the whole server)."""
    row = await pool.fetchrow(
        "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database"
        " WHERE datname = current_database()"
    )
    stats = await redis.info("stats")
    return {
        "pg_commits": float(row["xact_commit"]),
        "pg_rollbacks": float(row["xact_rollback"]),
        "pg_sessions": float(row["sessions"]),
        "redis_commands": float(stats["total_commands_processed"]),
    }


async def run_loadgen(config: Config, rate: float, users: list[BenchUser]) -> dict[str, Any]:
    spec = {
        "url": config.orders_url,
        "rate": rate,
        "duration": config.step_seconds,
        "tokens": [user.token for user in users],
        "max_inflight": 1024,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(
        process.communicate(json.dumps(spec).encode()), timeout=config.step_seconds + 60
    )
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{stderr.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(stdout)
    return result


async def wait_settled(
    pool: asyncpg.Pool, order_ids: list[uuid.UUID], seconds: float
) -> tuple[int, int]:
    """Wait (bounded) until no order is PENDING and then no saga still waits; what is left."""
    deadline = time.monotonic() + seconds
    pending = waiting = len(order_ids)
    while time.monotonic() < deadline:
        pending = await pool.fetchval(
            "SELECT count(*) FROM orders.orders WHERE id = ANY($1::uuid[]) AND status = 'PENDING'",
            order_ids,
        )
        if pending == 0:
            break
        await asyncio.sleep(0.25)
    while time.monotonic() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM orders.sagas WHERE order_id = ANY($1::uuid[])"
            " AND state <> 'settled'",
            order_ids,
        )
        if waiting == 0:
            break
        await asyncio.sleep(0.25)
    return int(pending), int(waiting)


async def wait_all_settled(pool: asyncpg.Pool, seconds: float) -> int:
    """Before the invariants are checked: wait (bounded) until every saga has settled, so a
    load that fell behind is not mistaken for a broken invariant. What is left unsettled."""
    deadline = time.monotonic() + seconds
    waiting = await pool.fetchval("SELECT count(*) FROM orders.sagas WHERE state <> 'settled'")
    if waiting:
        log(f"waiting (at most {seconds:g} s) for {waiting} sagas to settle")
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        waiting = await pool.fetchval("SELECT count(*) FROM orders.sagas WHERE state <> 'settled'")
    if waiting:
        log(f"WARNING: {waiting} sagas still unsettled; the invariants may report them")
    return int(waiting)


async def probe_saga(client: httpx.AsyncClient, config: Config, user: BenchUser) -> str | None:
    """One order end to end before any load; the reason when the saga does not work."""
    headers = {"authorization": f"Bearer {user.token}"}
    response = await client.post(
        f"{config.orders_url}/orders",
        json={"items": [{"sku": "bench-probe", "quantity": 1, "unit_price_cents": 100}]},
        headers=headers,
    )
    if response.status_code != 202:
        return f"POST /orders answered {response.status_code}: {response.text[:200]}"
    order_id = response.json()["id"]
    deadline = time.monotonic() + 10
    status = "PENDING"
    while time.monotonic() < deadline:
        order = await client.get(f"{config.orders_url}/orders/{order_id}", headers=headers)
        status = order.json()["status"]
        if status != "PENDING":
            break
        await asyncio.sleep(0.2)
    if status != "APPROVED":
        return (
            f"a probe order stayed {status} for 10 s (are orders-worker and users-worker running"
            " and consuming? see .run/bench/logs)"
            if status == "PENDING"
            else f"a probe order ended {status}, not APPROVED"
        )
    return None


def profile_path(config: Config) -> Path:
    return config.run_dir / f"profile-{config.profile}.txt"


async def profile_start(config: Config, pid: int, seconds: float) -> asyncio.subprocess.Process:
    output = profile_path(config)
    command = ["py-spy"] if shutil.which("py-spy") else ["uv", "tool", "run", "py-spy"]
    return await asyncio.create_subprocess_exec(
        *command,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(math.ceil(seconds)),
        "--rate",
        "100",
        "--gil",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


IDLE_LEAVES = ("Condition.wait", "EpollSelector.select", "select (selectors")


def _module(frame: str) -> str:
    """``func (sqlalchemy/orm/session.py:12)`` -> ``sqlalchemy``; stdlib files keep their name."""
    location = frame.rpartition("(")[2].rstrip(")")
    return location.split(":")[0].split("/")[0] or "?"


def profile_report(config: Config, during: str) -> dict[str, Any]:
    path = profile_path(config)
    if not path.exists():
        return {"process": config.profile, "during": during, "error": "py-spy wrote nothing"}
    return {"process": config.profile, "during": during, "file": str(path), **profile_top(path)}


PROJECT_MODULES = frozenset({"common", "users", "orders", "notifications"})


def profile_top(path: Path, limit: int = 12) -> dict[str, Any]:
    """Where a process spent its CPU, from py-spy's collapsed stacks (``--gil --format raw``).

    Only the thread holding the GIL is sampled, so the shares are of the time the process
    ran Python (or C holding the GIL: uvloop's socket I/O, asyncpg's protocol), not of time
    spent waiting. Reported: the running frame's top-level package (``by_module``), the
    functions with the most own time (``self``) and the project's own functions with the
    most inclusive time (``project``: which handler or query path costs most).
    """
    own: dict[str, int] = {}
    modules: dict[str, int] = {}
    project: dict[str, int] = {}
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        if leaf.startswith(IDLE_LEAVES):
            idle += count
            continue
        total += count
        own[leaf] = own.get(leaf, 0) + count
        modules[_module(leaf)] = modules.get(_module(leaf), 0) + count
        for frame in set(frames):
            if _module(frame) in PROJECT_MODULES:
                project[frame] = project.get(frame, 0) + count

    def top(table: dict[str, int], n: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: item[1], reverse=True)[:n]
        return [(frame, round(100 * count / max(total, 1), 1)) for frame, count in ranked]

    return {
        "busy_samples": total,
        "idle_samples": idle,
        "by_module": top(modules, 10),
        "self": top(own, limit),
        "project": top(project, limit),
    }


async def saga_step(
    config: Config,
    rate: float,
    users: list[BenchUser],
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    redis: Redis,
    cpu: procs.CpuTracker,
    pids: dict[str, int],
) -> dict[str, Any]:
    bus_before = await scrape_bus(client, config)
    counters_before = await backend_counters(pool, redis)
    profiler = None
    if config.profile and rate == config.profile_rate:
        profiler = await profile_start(config, pids[config.profile], config.step_seconds)
    cpu_before, started = cpu.take(), time.monotonic()
    load = await run_loadgen(config, rate, users)
    during_load = cpu.take()
    usage = during_load.percent_since(cpu_before, time.monotonic() - started)
    if profiler is not None:
        await asyncio.wait_for(profiler.wait(), timeout=60)
    orders = {uuid.UUID(order_id): (sent, latency) for order_id, sent, latency in load["orders"]}
    ids = list(orders)
    pending, waiting = await wait_settled(pool, ids, config.settle_seconds)
    # CPU per saga: everything the stack spent from the first POST until the sagas settled
    # (the drain included), over the sagas approved. It travels between machines far better
    # than a rate does.
    settle_elapsed = time.monotonic() - started
    until_settled = cpu.take().percent_since(cpu_before, settle_elapsed)
    cpu_ms = {name: 10 * until_settled.get(name, 0.0) * settle_elapsed for name in STACK_CPU}
    bus = bus_summary(bus_before, await scrape_bus(client, config))
    counters_after = await backend_counters(pool, redis)
    per_order = {
        name: (counters_after[name] - counters_before[name]) / max(len(orders), 1)
        for name in counters_after
    }
    rows = await pool.fetch(
        "SELECT id, status, extract(epoch FROM created_at)::float8 AS created,"
        " extract(epoch FROM updated_at)::float8 AS updated"
        " FROM orders.orders WHERE id = ANY($1::uuid[])",
        ids,
    )
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    approved = [row for row in rows if row["status"] == "APPROVED"]
    window_start = min((sent for sent, _ in orders.values()), default=0.0)
    window_end = window_start + config.step_seconds
    in_window = sum(1 for row in approved if row["updated"] <= window_end)
    latency = quantiles_ms([row["updated"] - row["created"] for row in approved])
    end_to_end = quantiles_ms([row["updated"] - orders[row["id"]][0] for row in approved])
    errors = {status: n for status, n in load["statuses"].items() if status != "202"}
    completed_per_second = in_window / config.step_seconds
    problems = []
    if errors or load["skipped_inflight_cap"]:
        problems.append(f"{sum(errors.values()) + load['skipped_inflight_cap']} failed")
    if pending:
        problems.append(f"{pending} still PENDING")
    if len(approved) < len(rows):
        problems.append(f"{len(rows) - len(approved)} not APPROVED")
    if completed_per_second < KEEP_UP_SHARE * rate:
        problems.append(f"fell behind ({completed_per_second / rate:.1%})")
    if not approved or latency["p99"] >= SUSTAIN_P99_MS:
        problems.append(f"p99 >= {SUSTAIN_P99_MS:g} ms")
    step: dict[str, Any] = {
        "offered_per_second": rate,
        "planned": load["planned"],
        "sent": load["sent"],
        "send_rate_per_second": load["sent"] / max(load["send_window_seconds"], 1e-9),
        "accepted": len(orders),
        "http_errors": errors,
        "statuses": statuses,
        "still_pending_after_settle": pending,
        "sagas_unsettled_after_settle": waiting,
        "completed_per_second": completed_per_second,
        "drain_seconds": (max(row["updated"] for row in approved) - window_end)
        if approved
        else None,
        "post_to_approved_ms": latency,
        "scheduled_send_to_approved_ms": end_to_end,
        "post_response_ms": load["response_ms"],
        "bus": bus,
        # Approximate: Postgres backends publish their counters at most once a second.
        "per_order": {name: round(value, 2) for name, value in per_order.items()},
        "pg_sessions_opened": counters_after["pg_sessions"] - counters_before["pg_sessions"],
        "generator": {
            "schedule_lag_ms": load["lag_ms"],
            "cpu_percent_of_core": 100 * load["cpu_seconds"] / max(load["wall_seconds"], 1e-9),
        },
        "cpu_percent": {name: round(value, 1) for name, value in usage.items()},
        "cpu_ms_per_saga": round(sum(cpu_ms.values()) / len(approved), 2) if approved else None,
        "cpu_ms_per_saga_by_process": {
            name: round(value / len(approved), 2) for name, value in cpu_ms.items()
        }
        if approved
        else {},
        "sustained": not problems,
        "problems": problems,
    }
    if profiler is not None:
        step["profile"] = profile_report(config, f"saga at {rate:g} orders/s")
    return step


async def saga(
    config: Config,
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    redis: Redis,
    users: list[BenchUser],
    cpu: procs.CpuTracker,
    pids: dict[str, int],
) -> dict[str, Any]:
    broken = await probe_saga(client, config, users[0])
    if broken is not None:
        log(f"saga: NOT MEASURED: {broken}")
        return {"measured": False, "reason": broken, "steps": []}
    bus_start = await scrape_bus(client, config)
    steps: list[dict[str, Any]] = []
    for rate in config.rates:
        log(f"saga: {rate:g} orders/s offered for {config.step_seconds:g} s ...")
        step = await saga_step(config, rate, users, client, pool, redis, cpu, pids)
        steps.append(step)
        lag = step["generator"]["schedule_lag_ms"]
        log(
            f"saga: {rate:g}/s -> {step['completed_per_second']:.1f} APPROVED/s, "
            f"p50 {step['post_to_approved_ms']['p50']:.1f} ms, "
            f"p99 {step['post_to_approved_ms']['p99']:.1f} ms; generator lag p99 "
            f"{lag['p99']:.2f} ms, CPU {step['generator']['cpu_percent_of_core']:.0f}%"
            + (f"; {', '.join(step['problems'])}" if step["problems"] else "")
        )
        behind = step["still_pending_after_settle"] or step["completed_per_second"] < 0.8 * rate
        stuck = step["still_pending_after_settle"] > step["accepted"] / 2
        # The target rate is always measured (its latency is a target), unless nothing moves.
        if stuck or (behind and rate >= TARGET_AT_RATE):
            log("saga: the stack did not keep up; higher rates skipped")
            break
    sustained = [step["offered_per_second"] for step in steps if step["sustained"]]
    return {
        "measured": True,
        "load": f"open loop, {config.step_seconds:g} s a step, {len(users)} users round-robin,"
        " one item of 100 cents an order",
        "steps": steps,
        "max_sustained_per_second": max(sustained, default=0.0),
        "bus": bus_summary(bus_start, await scrape_bus(client, config)),
    }


# --------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    read = report.get("read_path")
    if read:
        rows.append(
            {
                "target": f"read path >= {TARGET_READ_RATIO:g}x baseline",
                "value": f"{read['ratio']:.2f}x",
                "ok": read["ratio"] >= TARGET_READ_RATIO,
            }
        )
    saga_report = report.get("saga", {})
    if not saga_report:
        pass
    elif saga_report.get("measured"):
        best = saga_report["max_sustained_per_second"]
        rows.append(
            {
                "target": f">= {TARGET_SAGAS_PER_SECOND} completed sagas/s sustained",
                "value": f"{best:g}/s",
                "ok": best >= TARGET_SAGAS_PER_SECOND,
            }
        )
        quiet = [s for s in saga_report["steps"] if s["offered_per_second"] == CPU_FIGURE_AT_RATE]
        if quiet and quiet[0]["cpu_ms_per_saga"] is not None:
            per_saga = quiet[0]["cpu_ms_per_saga"]
            rows.append(
                {
                    "target": f"CPU per saga <= {TARGET_CPU_MS_PER_SAGA:g} ms"
                    f" (at {CPU_FIGURE_AT_RATE}/s)",
                    "value": f"{per_saga:.1f} ms",
                    "ok": per_saga <= TARGET_CPU_MS_PER_SAGA,
                }
            )
        at = [s for s in saga_report["steps"] if s["offered_per_second"] == TARGET_AT_RATE]
        if at:
            latency = at[0]["post_to_approved_ms"]
            rows.append(
                {
                    "target": f"POST->APPROVED p50 < {TARGET_P50_MS:g} ms at {TARGET_AT_RATE}/s",
                    "value": f"{fmt(latency['p50'])} ms",
                    "ok": latency["p50"] < TARGET_P50_MS,
                }
            )
            rows.append(
                {
                    "target": f"POST->APPROVED p99 < {TARGET_P99_MS:g} ms at {TARGET_AT_RATE}/s",
                    "value": f"{fmt(latency['p99'])} ms",
                    "ok": latency["p99"] < TARGET_P99_MS,
                }
            )
    else:
        rows.append(
            {"target": "order saga", "value": "not measured", "ok": False},
        )
    rss = {name: entry for name, entry in report["rss"].items() if not entry.get("not_running")}
    missing = len(report["rss"]) - len(rss)
    if rss:
        worst = max(rss.items(), key=lambda item: item[1]["peak_hwm_mib"])
        rows.append(
            {
                "target": f"every process < {TARGET_RSS_MIB:g} MiB RSS",
                "value": f"{worst[1]['peak_hwm_mib']:.0f} MiB ({worst[0]})"
                + (f", {missing} not running" if missing else ""),
                "ok": not missing
                and all(entry["peak_hwm_mib"] < TARGET_RSS_MIB for entry in rss.values()),
            }
        )
    return rows


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "",
        f"== make bench  {meta['timestamp']}  commit {meta['commit']}"
        f"{' (dirty)' if meta['dirty'] else ''}"
        f"  {meta['cpus']} cores  (machine {meta['machine']['cpu_busy_percent_before']:.0f}% busy"
        f" before start, load {meta['machine']['loadavg_1m_before']:.2f}) ==",
    ]
    read = report.get("read_path")
    if read:
        lines += [
            "",
            f"Read path: {read['endpoint']}   [{read['load']}]",
            f"  {'':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'server CPU%':>12}"
            f" {'CPU ms/req':>11}",
        ]
        for name, process in (("service", "users-api"), ("baseline", "baseline")):
            entry = read[name]
            cpu = sum(r["cpu_percent"].get(process, 0.0) for r in entry["rounds"]) / len(
                entry["rounds"]
            )
            lines.append(
                f"  {name:10} {entry['requests_per_second']:9,.0f} {fmt(entry['p50_ms'], 2):>8}"
                f" {fmt(entry['p99_ms'], 2):>8} {entry['errors']:7d} {cpu:12.0f}"
                f" {entry['cpu_ms_per_request']:11.3f}"
            )
        cpu_ratio = read["baseline"]["cpu_ms_per_request"] / max(
            read["service"]["cpu_ms_per_request"], 1e-9
        )
        lines.append(
            f"  ratio service/baseline: {read['ratio']:.2f}x by req/s, {cpu_ratio:.2f}x by CPU per"
            " request (server: API process + Postgres + Redis)"
        )
    saga_report = report.get("saga", {})
    lines += [
        "",
        "Order saga: POST /orders -> APPROVED (p50/p99 from the orders' created_at/updated_at)",
    ]
    if not saga_report.get("measured"):
        lines.append(f"  NOT MEASURED: {saga_report.get('reason', 'skipped')}")
    else:
        lines.append(f"  [{saga_report['load']}]")
        lines.append(
            f"  {'offered/s':>9} {'sent/s':>7} {'APPROVED/s':>10} {'p50 ms':>7} {'p99 ms':>7}"
            f" {'e2e p99':>8} {'POST p99':>8} {'bus p50/p99 ms':>14} {'gen lag p99':>11}"
            f" {'gen CPU':>7}  verdict"
        )
        for step in saga_report["steps"]:
            latency, bus = step["post_to_approved_ms"], step["bus"]
            generator = step["generator"]
            lines.append(
                f"  {step['offered_per_second']:9g} {step['send_rate_per_second']:7.1f}"
                f" {step['completed_per_second']:10.1f} {fmt(latency['p50']):>7}"
                f" {fmt(latency['p99']):>7} {fmt(step['scheduled_send_to_approved_ms']['p99']):>8}"
                f" {fmt(step['post_response_ms']['p99']):>8}"
                f" {fmt(bus['p50_ms']):>6}/{fmt(bus['p99_ms']):<7}"
                f" {fmt(generator['schedule_lag_ms']['p99'], 2):>8} ms"
                f" {generator['cpu_percent_of_core']:6.0f}%  "
                + ("ok" if step["sustained"] else ", ".join(step["problems"]))
            )
        lines.append(
            f"  highest rate sustained (all APPROVED, >= {KEEP_UP_SHARE:.0%} of offered completed,"
            f" p99 < {SUSTAIN_P99_MS:g} ms): {saga_report['max_sustained_per_second']:g}/s"
        )
        lines.append(
            "  e2e p99 = scheduled send -> APPROVED (includes API queueing); POST p99 = HTTP"
            " response time seen by the generator"
        )
        lines.append(
            "  Work per order (approximate: pg_stat_database of app_bench, Redis INFO of the whole"
            " server):"
        )
        for step in saga_report["steps"]:
            work = step["per_order"]
            lines.append(
                f"    {step['offered_per_second']:9g}/s: {work['pg_commits']:.1f} Postgres commits,"
                f" {work['pg_rollbacks']:.2f} rollbacks, {work['redis_commands']:.1f} Redis"
                f" commands; {step['pg_sessions_opened']:.0f} Postgres sessions opened"
            )
        lines.append(
            "  CPU ms per APPROVED saga (from the first POST until settled; six processes,"
            " Postgres, Redis, irq):"
        )
        short_names = {
            name: name.replace("notifications", "notif").replace("worker", "wkr")
            for name in STACK_CPU
        }
        lines.append(
            "    "
            + f"{'offered/s':>9} {'total':>7} "
            + " ".join(f"{short_names[n]:>10}" for n in STACK_CPU)
        )
        for step in saga_report["steps"]:
            by_process = step["cpu_ms_per_saga_by_process"]
            lines.append(
                "    "
                + f"{step['offered_per_second']:9g} {fmt(step['cpu_ms_per_saga'], 2):>7} "
                + " ".join(f"{by_process.get(n, 0.0):10.2f}" for n in STACK_CPU)
            )
        lines.append("  CPU % of one core during each step:")
        names = [*PROCESSES, "postgres", "redis", "bench", "irq", "other", "machine"]
        short = {
            name: name.replace("notifications", "notif").replace("worker", "wkr") for name in names
        }
        lines.append("    " + f"{'offered/s':>9} " + " ".join(f"{short[n]:>10}" for n in names))
        for step in saga_report["steps"]:
            lines.append(
                "    "
                + f"{step['offered_per_second']:9g} "
                + " ".join(f"{step['cpu_percent'].get(name, 0.0):10.0f}" for name in names)
            )
        lines.append(
            "    (postgres: every backend on the machine; bench: this benchmark and its load"
            " generator; irq: kernel interrupt time, mostly loopback TCP; other: anything else;"
            " machine: % of all cores)"
        )
        bus = saga_report["bus"]
        lines += [
            "",
            f"Bus publish->handle, whole saga load, {bus['count']} messages"
            f" (bucket-interpolated from bus_handle_latency_seconds):"
            f" p50 {fmt(bus['p50_ms'])} ms, p99 {fmt(bus['p99_ms'])} ms",
        ]
        for key, entry in bus["by_type"].items():
            lines.append(
                f"  {key:45} n={entry['count']:6d}  p50 {fmt(entry['p50_ms']):>6} ms"
                f"  p99 {fmt(entry['p99_ms']):>6} ms"
            )
        for label, counts in (
            ("handler failures (retried)", bus["handler_failures"]),
            ("dead-lettered", bus["dead_lettered"]),
        ):
            if counts:
                lines.append(f"  {label}: " + ", ".join(f"{key} {n}" for key, n in counts.items()))
    profiles = [read["profile"]] if read and "profile" in read else []
    profiles += [step["profile"] for step in saga_report.get("steps", []) if "profile" in step]
    for profile in profiles:
        lines += ["", f"py-spy of {profile['process']}, {profile['during']}:"]
        if "error" in profile:
            lines.append(f"  {profile['error']}")
            continue
        lines += [
            f"  {profile['busy_samples']} samples holding the GIL ({profile['file']}); by module: "
            + ", ".join(f"{module} {share:.0f}%" for module, share in profile["by_module"]),
            "  top own time:",
        ]
        lines += [f"  {share:5.1f}%  {frame}" for frame, share in profile["self"]]
        lines.append("  the project's functions, inclusive:")
        lines += [f"  {share:5.1f}%  {frame}" for frame, share in profile["project"]]
    lines += [
        "",
        f"Peak memory, MiB (VmHWM: the process's lifetime peak; then the highest VmRSS sampled"
        f" every 0.5 s in each phase; {report['rss_samples']} samples):",
        f"  {'process':22} {'VmHWM':>7} " + " ".join(f"{phase:>8}" for phase in PHASES),
    ]
    for name, entry in report["rss"].items():
        if entry.get("not_running"):
            lines.append(f"  {name:22} not running")
            continue
        by_phase = entry["max_rss_mib_by_phase"]
        lines.append(
            f"  {name:22} {entry['peak_hwm_mib']:7.1f} "
            + " ".join(f"{fmt(by_phase.get(phase)):>8}" for phase in PHASES)
        )
    errors = report.get("stack_errors", {})
    if errors:
        lines += ["", "WARNING: the stack logged errors during the run (figures may mislead):"]
        for name, entry in errors.items():
            lines.append(f"  {name}: {entry['count']} error lines, commonest:")
            lines += [f"    {n:6d}  {message[:150]}" for message, n in entry["top"]]
    lines += ["", "Targets (DESIGN.md section 8):"]
    for row in report["targets"]:
        lines.append(f"  {row['target']:45} {row['value']:>22}  {verdict(row['ok'])}")
    return "\n".join(lines)


def git_state() -> tuple[str, bool]:
    def git(*args: str) -> str:
        result = subprocess.run(  # noqa: S603 - fixed git arguments
            ["git", *args],  # noqa: S607 - git from PATH
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip()

    return git("rev-parse", "--short", "HEAD") or "unknown", bool(git("status", "--porcelain"))


async def main_async(config: Config) -> int:
    if wrk.available() is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk); bench/run.sh does that")
    machine = machine_quiet_check()
    if machine["cpu_busy_percent_before"] > 20:
        log(
            f"WARNING: the machine was {machine['cpu_busy_percent_before']:.0f}% busy before the"
            " run; other work skews every figure"
        )
    pids = stack_pids(config)
    cpu_groups: procs.PidGroups = {
        name: procs.fixed(pid, *replica_pids(config, name)) for name, pid in pids.items()
    }
    cpu_groups["postgres"] = procs.named("postgres")  # every database's backends
    cpu_groups["redis"] = procs.named("redis-server")
    # This process and its children: the load generator, wrk, py-spy.
    cpu_groups["bench"] = lambda: [os.getpid(), *procs.children(os.getpid())]
    cpu = procs.CpuTracker(cpu_groups)
    cpu.start()
    log_start = stacklogs.offsets(config.run_dir / "logs", PROCESSES)
    memory = procs.MemorySampler(pids)
    memory.start()
    config.results_dir.mkdir(parents=True, exist_ok=True)
    commit, dirty = git_state()
    report: dict[str, Any] = {
        "meta": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": commit,
            "dirty": dirty,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": machine,
            "config": {k: str(v) for k, v in asdict(config).items()},
        }
    }
    limits = httpx.Limits(max_connections=32)
    async with (
        httpx.AsyncClient(timeout=30.0, limits=limits) as client,
        asyncpg.create_pool(config.dsn, min_size=1, max_size=2) as pool,
        Redis.from_url(config.redis_url) as redis,
    ):
        report["meta"]["postgres"] = await postgres_headroom(pool)
        log(f"creating {config.users} users with sessions")
        memory.enter("sign-up")
        users = await create_users(client, config)
        if "read" in config.parts:
            memory.enter("read")
            report["read_path"] = await read_path(config, client, users[0], cpu, pids)
            report["gateway"] = await gateway.compare(  # bench/gateway.py: the gateway's cost
                gateway_url=gateway.gateway_url_beside(config.users_url),
                users_url=config.users_url,
                user_id=users[0].id,
                token=users[0].token,
                gateway_pid=supervised_pid(config, "gateway-api"),
                connections=config.connections,
                seconds=config.read_seconds,
                rounds=config.rounds,
                warmup_seconds=config.warmup_seconds,
            )
        if "saga" in config.parts:
            memory.enter("saga")
            report["saga"] = await saga(config, client, pool, redis, users, cpu, pids)
            report["saga"]["unsettled_at_end"] = await wait_all_settled(pool, FINAL_SETTLE_SECONDS)
    await memory.stop()
    await cpu.stop()
    report["stack_errors"] = stacklogs.errors_since(config.run_dir / "logs", log_start)
    report["rss_samples"] = memory.samples
    report["rss"] = {
        name: {
            "pid": pid,
            "peak_hwm_mib": memory.hwm_kib.get(name, 0) / 1024,
            "max_rss_mib_by_phase": {
                phase: peaks.get(name, 0) / 1024 for phase, peaks in memory.max_rss_kib.items()
            },
        }
        for name, pid in pids.items()
    }
    for name in PROCESSES:
        report["rss"].setdefault(name, {"pid": None, "not_running": True})
    report["targets"] = targets(report)
    report["meta"]["wall_seconds"] = round(time.monotonic() - STARTED, 1)
    print(render(report), flush=True)
    stamp = report["meta"]["timestamp"].replace(":", "").replace("-", "")
    text = json.dumps(report, indent=2, default=str)
    for path in (config.results_dir / f"{stamp}.json", config.results_dir / "latest.json"):
        path.write_text(text + "\n")
    log(f"wrote {config.results_dir / f'{stamp}.json'} and latest.json")
    return 0


def main() -> None:
    sys.exit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
